"""The orchestrator: one actor per run, the only writer of that run's stream.

On every message it folds the resulting events into its state and asks the pipeline's
pure ``decide`` what to do next, until the run waits for an agent or a person, or ends. What one such
round produces (an answer, its outcome, the next call's intent) is appended in one
transaction, before anything leaves the actor: the intent of a model call is in the log
before the call is handed to an agent. Before that, the run's lineage is searched for a
recorded answer to the same request, which is reused instead of calling again. A new run's
first intents are written by its starter, with ``RunStarted`` and the lease
(``opening_intents``); the orchestrator finds them in the run as a resumed run would.

Tools go the same way: ``ToolInvoked`` is appended before the agent runs the tool, its
``ToolReturned`` after. A result the lineage's ancestors recorded for the same tool and
arguments is reused (the tool does not run); a resumed run's own results are already in
its state, so the decider does not ask for them again.
"""

from __future__ import annotations

import json
import logging
import queue
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

import pykka

from agentlog.events import (
    CallRef,
    Event,
    LLMCallAnswered,
    LLMCallFailed,
    LLMCallRequested,
    ToolCall,
    ToolInvoked,
    ToolReturned,
    Usage,
    request_hash,
)
from agentlog.models import CallContext
from agentlog.pipelines import CallModel, InvokeTool, Pipeline, Record, fold
from agentlog.store import LeaseLost, Store, StoredEvent
from agentlog.tools import ToolNotRegistered, ToolRegistry, default_registry

from .budget import Budget
from .dispatch import PooledActor
from .errors import AgentDied, RunHandedBack, RunStopped
from .lease import HeldLease
from .live import LiveAnswer, Watcher
from .messages import (
    AgentCrashed,
    AttemptFailed,
    CallCompleted,
    CallRequest,
    HandBack,
    ToolCompleted,
    ToolRequest,
)
from .reuse import OwnAnswers, find_recorded_answer

log = logging.getLogger(__name__)

Observer = Callable[[StoredEvent], None]


class Orchestrator(PooledActor):
    """A run's orchestrator: a pykka actor without a thread of its own (``dispatch.py``); its
    turns, one at a time, are the only code that appends to the run's stream."""

    def __init__(
        self,
        store: Store,
        run_id: str,
        pipeline: Pipeline,
        agents: dict[str, pykka.ActorRef],
        done: Outcome,
        *,
        observer: Observer | None = None,
        reuse: bool = True,
        tools: ToolRegistry | None = None,
        lease: HeldLease | None = None,
        watcher: Watcher | None = None,
        budget: Budget | None = None,
        written: Sequence[Event] | None = None,
        stored: Sequence[StoredEvent] | None = None,
    ):
        super().__init__()
        self.written = written  # the run's events, when its starter has just written all of them
        self.stored = stored  # the run's events as its starter has just read them all
        self.lease = lease
        self.watcher = watcher
        self.store, self.run_id, self.pipeline = store, run_id, pipeline
        self.agents, self.done, self.observer, self.reuse = agents, done, observer, reuse
        self.tools = tools if tools is not None else default_registry
        self.state: Any = None
        self.seq = 0
        self.lineage: list[str] = []
        self.answers = OwnAnswers(run_id)  # the run's own answers, for reuse
        self.in_flight: set[str] = set()
        self.digests: dict[str, str] = {}  # call id -> the hash of the request sent, while it is out
        self.intents: dict[str, str] = {}  # call id -> request hash: intents its starter wrote, not yet sent
        self.pending: list[Event] = []  # folded, not yet in the log
        self.tools_in_flight: set[tuple[str, str]] = set()
        self._ancestor_results: dict[tuple[str, str], tuple[CallRef, ToolReturned]] | None = None
        self.budget = budget if budget is not None else Budget()
        self.handing_back = False  # sends nothing more; released once nothing is in flight

    # --- lifecycle --------------------------------------------------------------

    def on_start(self) -> None:
        if self.lease is not None:
            ref = self.actor_ref

            def lost(exc: LeaseLost) -> None:
                try:
                    ref.tell(exc)
                except pykka.ActorDeadError:
                    pass  # the run ended meanwhile

            self.lease.on_lost = lost
        self._guard(self._load)

    def _load(self) -> None:
        if self.written is not None:
            events, self.written = list(self.written), None
            seqs: Sequence[int] = range(1, len(events) + 1)
            # The starter wrote the first calls' intents with RunStarted (``opening_intents``):
            # their hashes are the ones in the log; the observer hears of them as of any append.
            for seq, event in zip(seqs, events):
                if isinstance(event, LLMCallRequested):
                    self.intents[event.call_id] = event.request_hash
                    if self.observer is not None:
                        self._notify(StoredEvent(self.run_id, seq, type(event).__name__, event.VERSION, 0.0, event))
        else:
            stored, self.stored = (self.store.read(self.run_id) if self.stored is None else self.stored), None
            events, seqs = [s.event for s in stored], [s.seq for s in stored]
        self.seq = seqs[-1] if events else 0
        self.state = fold(self.pipeline, events)
        for seq, event in zip(seqs, events):
            self.budget.load(event)
            self.answers.add(seq, event)
        # A run that names no parent (RunStarted, RunForked) has no ancestors to look up.
        if any(getattr(event, "parent_run_id", None) for event in events):
            self.lineage = self.store.lineage(self.run_id)
        else:
            self.lineage = [self.run_id]
        self._advance()

    def on_receive(self, message: Any) -> Any:
        self._guard(self._handle, message)

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        self._fail(exception_value)

    def on_stop(self) -> None:
        self._release()
        # Stopped from outside (RunHandle.stop, or every actor of the process): whoever waits
        # on the run hears so now rather than never.
        if not self.done.settled():
            stopped = RunStopped(self.run_id, "its actors were stopped before it ended")
            self.done.set_exception((RunStopped, stopped, None))

    def _guard(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - handed to whoever waits on the run
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        # Facts first: what this round already learnt (an answer, a tool's result) reaches
        # the log before the run fails, so a resume does not pay for it again. A writer
        # that lost its lease writes nothing more.
        if not isinstance(exc, LeaseLost):
            try:
                self._flush()
            except Exception:  # noqa: BLE001 - the failure being reported is the one that matters
                log.info("run %s: could not record the last events before failing", self.run_id, exc_info=True)
        self._release()
        if not self.done.settled():
            self.done.set_exception((type(exc), exc, exc.__traceback__))
        try:
            self.stop()
        except pykka.ActorDeadError:
            pass  # pykka stopped it already (an unhandled failure)

    def _release(self) -> None:
        if self.lease is not None:
            self.lease.release()

    # --- messages from agents ----------------------------------------------------

    def _handle(self, message: Any) -> None:
        if self.state is None or self.state.done:
            return
        match message:
            case AttemptFailed(call_id, agent, f):
                self._append([LLMCallFailed(
                    call_id=call_id, agent=agent, attempt=f.attempt, error_kind=f.error_kind,
                    message=f.message, retryable=f.retryable, gave_up=f.gave_up,
                )])
                if f.gave_up:
                    self.in_flight.discard(call_id)
                    self.digests.pop(call_id, None)
            case CallCompleted(call_id, agent, c):
                self.in_flight.discard(call_id)
                digest = self.digests.pop(call_id, None) or request_hash(self.state.calls[call_id].request)
                self._append([LLMCallAnswered(
                    call_id=call_id, agent=agent, request_hash=digest,
                    content=c.content, tool_calls=[ToolCall(*t) for t in c.tool_calls],
                    usage=Usage(c.prompt_tokens, c.completion_tokens, c.prompt_tokens + c.completion_tokens),
                    latency_ms=round(c.latency_ms, 3), model=c.model,
                )])
            case ToolCompleted(call_id, tool_call_id, name, result, is_error):
                self.tools_in_flight.discard((call_id, tool_call_id))
                self._append([ToolReturned(call_id=call_id, tool_call_id=tool_call_id, name=name, result=result,
                                           is_error=is_error)])
            case AgentCrashed(call_id, agent, reason):
                raise AgentDied(self.run_id, f"agent {agent} died on {call_id}: {reason}")
            case LeaseLost():  # the heartbeat found another owner: stop before sending anything
                raise message
            case HandBack():
                self.handing_back = True
            case _:
                log.warning("orchestrator %s ignored %r", self.run_id, message)
                return
        self._advance()

    # --- the loop ---------------------------------------------------------------

    def _advance(self) -> None:
        """Apply decisions until the run waits for an agent, or ends."""
        if self.handing_back:
            self._hand_back()
            return
        while not self.state.done:
            progressed = False
            for command in self.pipeline.decide(self.state):
                if isinstance(command, Record):
                    self._append([command.event])
                    progressed = True
                    if self.state.done:
                        break  # the rest of this decision was made for a run that went on
                elif isinstance(command, CallModel):
                    progressed |= self._call(command)
                elif isinstance(command, InvokeTool):
                    progressed |= self._invoke(command)
            if not progressed:
                break
        # Waiting for a person is settled too: their decision is a new event, and whichever
        # process records it continues the run; nothing here needs to stay alive for it.
        settles = self.state.done or self._waiting_for_person()
        self._flush(release=settles)  # the lease goes with the run's last events
        if settles:
            self._release()
            self.done.set(self.seq)
            self.stop()

    def _hand_back(self) -> None:
        """Record what arrived, decide nothing more; once no call or tool is in flight, give the run up."""
        self._flush()
        if self.in_flight or self.tools_in_flight:
            return
        self._release()
        if not self.done.settled():
            self.done.set_exception((RunHandedBack, RunHandedBack(self.run_id), None))
        self.stop()

    def _waiting_for_person(self) -> bool:
        return (getattr(self.state, "waiting", None) is not None and not self.in_flight
                and not self.tools_in_flight)

    def _call(self, command: CallModel) -> bool:
        """Log the intent, then reuse a recorded answer or hand the call to its agent."""
        if command.call_id in self.in_flight or self.state.done:
            return False
        digest = self.intents.pop(command.call_id, None) or request_hash(command.request)
        if command.call_id not in self.state.calls:
            self._append([LLMCallRequested(
                call_id=command.call_id, agent=command.agent, step=command.step,
                attempt=command.attempt, request=command.request, request_hash=digest, round=command.round,
            )])
        if self.reuse:
            found = self.answers.find(digest)
            if found is None and len(self.lineage) > 1:
                found = find_recorded_answer(self.store, digest, self.lineage[1:])
            if found is not None:
                origin, answer = found
                self._append([LLMCallAnswered(
                    call_id=command.call_id, agent=command.agent, request_hash=digest,
                    content=answer.content, tool_calls=answer.tool_calls, usage=answer.usage,
                    latency_ms=0.0, model=answer.model, reused_from=origin,
                )])
                return True
        stop = self.budget.stop(command.call_id, command.step)  # checked before the request is sent
        if stop is not None:
            self._append(stop)
            return True
        agent = self.agents.get(command.agent)
        if agent is None:
            raise KeyError(f"run {self.run_id} has no agent {command.agent!r}")
        self._flush()
        self.in_flight.add(command.call_id)
        self.digests[command.call_id] = digest
        live = LiveAnswer(self.store, self.run_id, command.call_id, command.agent, command.request,
                          watcher=self.watcher)
        context = CallContext(run_id=self.run_id, agent=command.agent, step=command.step, attempt=command.attempt,
                              call_id=command.call_id, round=command.round)
        agent.tell(CallRequest(command.call_id, command.request, self.actor_ref, live, context))
        return False

    def _invoke(self, command: InvokeTool) -> bool:
        """Log the tool call, then reuse an ancestor's result or hand the call to its agent."""
        key = (command.call_id, command.tool_call_id)
        if key in self.tools_in_flight:
            return False
        invoked = ToolInvoked(call_id=command.call_id, tool_call_id=command.tool_call_id, name=command.name,
                              arguments=command.arguments)
        pending = [] if command.tool_call_id in self.state.calls[command.call_id].invoked else [invoked]

        def returned(result: str, is_error: bool = False, reused_from: CallRef | None = None) -> ToolReturned:
            return ToolReturned(call_id=command.call_id, tool_call_id=command.tool_call_id, name=command.name,
                                result=result, is_error=is_error, reused_from=reused_from)

        offered = [spec.name for spec in getattr(self.state, "tools", {}).get(command.agent, [])]
        if command.name not in offered:  # the model asked for a tool it was not given
            available = ", ".join(offered) or "none"
            self._append([*pending, returned(f"error: there is no tool named {command.name!r} "
                                             f"(available: {available})", is_error=True)])
            return True
        if self.reuse:
            found = self._recorded_result(command.name, command.arguments)
            if found is not None:
                origin, recorded = found
                self._append([*pending, returned(recorded.result, reused_from=origin)])
                return True
        tool = self.tools.get(command.name)
        if tool is None:
            raise ToolNotRegistered(
                f"run {self.run_id} offers the tool {command.name!r} to {command.agent}, but this process has "
                f"not registered it; register it (for search_documents: pass --docs DIR) and resume the run"
            )
        agent = self.agents.get(command.agent)
        if agent is None:
            raise KeyError(f"run {self.run_id} has no agent {command.agent!r}")
        if pending:
            self._append(pending)
        self._flush()
        self.tools_in_flight.add(key)
        agent.tell(ToolRequest(command.call_id, command.tool_call_id, tool, command.arguments, self.actor_ref))
        return False

    def _recorded_result(self, name: str, arguments: str) -> tuple[CallRef, ToolReturned] | None:
        """A successful result of ``name`` with the same arguments in an ancestor (closest first)."""
        if self._ancestor_results is None:
            found: dict[tuple[str, str], tuple[CallRef, ToolReturned]] = {}
            for run_id in self.lineage[1:]:
                args: dict[tuple[str, str], str] = {}
                for s in self.store.read(run_id):
                    e = s.event
                    if isinstance(e, ToolInvoked):
                        args[(e.call_id, e.tool_call_id)] = e.arguments
                    elif isinstance(e, ToolReturned) and not e.is_error and (e.call_id, e.tool_call_id) in args:
                        origin = e.reused_from or CallRef(run_id=run_id, seq=s.seq, call_id=e.call_id)
                        found.setdefault((e.name, _canonical_arguments(args[(e.call_id, e.tool_call_id)])),
                                         (origin, e))
            self._ancestor_results = found
        return self._ancestor_results.get((name, _canonical_arguments(arguments)))

    def _append(self, events: Sequence[Event]) -> None:
        """Fold ``events`` now; they reach the log at the next ``_flush``."""
        for event in events:
            self.state = self.pipeline.evolve(self.state, event)
            self.budget.observe(event)
        self.pending.extend(events)

    def _flush(self, release: bool = False) -> None:
        """Append what this decision round produced, in one transaction (``release``: the
        run's lease is given up in it).

        Called before anything leaves the actor (a call or a tool handed to an agent, the
        run's outcome), so the log holds a call's intent before the request is sent.
        """
        if not self.pending:
            return
        events, self.pending = self.pending, []
        first = self.seq + 1
        lease = self.lease.lease if self.lease is not None else None
        release = release and lease is not None
        self.seq = self.store.append(self.run_id, events, self.seq, lease=lease, release=release)
        if release:
            self.lease.given_up()
        for offset, event in enumerate(events):
            self.answers.add(first + offset, event)
        if self.observer is not None:
            for offset, event in enumerate(events):
                self._notify(StoredEvent(self.run_id, first + offset, type(event).__name__,
                                         type(event).VERSION, 0.0, event))

    def _notify(self, stored: StoredEvent) -> None:
        try:
            self.observer(stored)
        except Exception:  # an observer's bug must not stop the run
            log.exception("observer failed on %s", stored.type)


def opening_intents(pipeline: Pipeline, events: Sequence[Event]) -> list[LLMCallRequested]:
    """The intents a new run's orchestrator would append first, given the run's first ``events``.

    When the pipeline's first decision is only model calls, their intents can be written
    with ``RunStarted`` and the run's lease in one transaction: the orchestrator then finds
    them in the run, as a resumed run finds the intent of a call it never sent, and sends
    them. Any other first decision (an outcome, a tool) is left to the orchestrator: ``[]``;
    so is a decider that raises (the orchestrator fails the run with it, as for any decision).
    """
    try:
        state = fold(pipeline, events)
        commands = pipeline.decide(state)
        if not commands or not all(isinstance(c, CallModel) and c.call_id not in state.calls for c in commands):
            return []
        return [LLMCallRequested(call_id=c.call_id, agent=c.agent, step=c.step, attempt=c.attempt,
                                 request=c.request, request_hash=request_hash(c.request), round=c.round)
                for c in commands]
    except Exception:  # noqa: BLE001 - the orchestrator meets it again and fails the run with it
        return []


def _canonical_arguments(arguments: str) -> str:
    """Arguments as key-sorted compact JSON, so formatting does not defeat reuse."""
    try:
        return json.dumps(json.loads(arguments), sort_keys=True, separators=(",", ":"))
    except ValueError:
        return arguments


class Outcome:
    """How a run ended in this process: set once by its orchestrator, waited for by its handle.

    What ``pykka.ThreadingFuture`` did here (``get``, ``set``, ``set_exception``), on one lock
    held until the outcome is set, instead of a condition and a lock made for each wait.
    """

    __slots__ = ("_ready", "_set", "_value", "_error", "_traceback")

    def __init__(self) -> None:
        self._ready = threading.Lock()
        self._ready.acquire()  # released once, as the outcome is set
        self._set = False
        self._value: Any = None
        self._error: BaseException | None = None
        self._traceback: Any = None

    def settled(self) -> bool:
        return self._set

    def set(self, value: Any = None) -> None:
        self._settle(value, None)

    def set_exception(self, exc_info: Any = None) -> None:
        """``exc_info`` as ``sys.exc_info()`` gives it (the default)."""
        _type, error, traceback = exc_info if exc_info is not None else sys.exc_info()
        assert error is not None
        self._settle(None, error, traceback)

    def _settle(self, value: Any, error: BaseException | None, traceback: Any = None) -> None:
        with _SETTLING:
            if self._set:
                raise queue.Full  # as a pykka future set twice
            self._value, self._error, self._traceback, self._set = value, error, traceback, True
        self._ready.release()

    def get(self, timeout: float | None = None) -> Any:
        """The value, or the exception raised; ``pykka.Timeout`` after ``timeout`` seconds unset."""
        if not self._set:
            if timeout is not None and timeout <= 0:
                got = self._ready.acquire(blocking=False)
            else:
                got = self._ready.acquire(timeout=-1 if timeout is None else timeout)
            if not got:
                raise pykka.Timeout(f"{timeout} seconds")
            self._ready.release()  # for whoever else waits
        if self._error is not None:
            raise self._error.with_traceback(self._traceback)  # each raise from where it was raised
        return self._value


_SETTLING = threading.Lock()
