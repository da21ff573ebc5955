"""An agent: a pykka actor per role and gateway, with its own mailbox, shared by the runs of a
process; it runs model calls and tools off its mailbox, so one slow call holds up no other."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from functools import partial
from typing import Any

import pykka

from agentlog.models import AttemptFailure, CallFailed, Completion, Gateway
from agentlog.models.inprocess import Overtaken

from .dispatch import PooledActor, Running
from .messages import AgentCrashed, AttemptFailed, CallCompleted, CallRequest, ToolCompleted, ToolRequest

log = logging.getLogger(__name__)

# Per gateway class: which of ``complete``'s later keywords (``context``, ``handoff``) it takes.
_TAKES: dict[type, tuple[bool, bool]] = {}


def _takes(gateway: Gateway) -> tuple[bool, bool]:
    """Whether ``gateway.complete`` takes ``context=`` and ``handoff=``, decided once per class: a
    subclass written before them overrides ``complete`` without them (and without ``**kwargs``)."""
    cls = type(gateway)
    takes = _TAKES.get(cls)
    if takes is None:
        try:
            parameters = inspect.signature(cls.complete).parameters
        except (TypeError, ValueError):  # no signature to read: the arguments it was first given
            takes = (False, False)
        else:
            anything = any(p.kind is p.VAR_KEYWORD for p in parameters.values())

            def accepts(name: str) -> bool:
                p = parameters.get(name)
                return anything or (p is not None and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))

            takes = (accepts("context"), accepts("handoff"))
        _TAKES[cls] = takes
    return takes


class _Tries:
    """The tries of one call to an in-process model: the dispatcher task running the current one,
    and, as the gateway's ``handoff``, what happens when it overruns the timeout."""

    __slots__ = ("agent", "message", "running")

    def __init__(self, agent: AgentActor, message: CallRequest, running: Running | None):
        self.agent, self.message, self.running = agent, message, running

    def __call__(self, resume: Callable[[], Completion]) -> None:
        self.agent._resume(self, resume)


class AgentActor(PooledActor):
    """Runs each requested call through the gateway and reports every attempt to ``reply_to``;
    runs each requested tool and reports its result (a tool that raises reports the error).

    One agent serves every run of the process that uses its role and gateway: its mailbox
    hands each call and tool to the dispatcher, where it runs on a thread of its own while it
    blocks, so calls of different runs go out at once (see ``dispatch.py``).

    An in-process model runs inline on the call's thread; if it overruns the run's timeout,
    the rest of the call (its ``timeout`` failure, the retries) goes on on another thread
    (``_resume``) and the late answer is dropped (``gateway.complete``'s ``handoff``).

    Whatever a tool or a model client raises is reported as a result or a failed attempt.
    Anything worse (a ``BaseException``, or the report itself failing) ends that call, and
    its ``reply_to`` is told ``AgentCrashed`` with the reason, so its run fails instead of
    waiting; the agent goes on serving the other runs.
    """

    def __init__(self, name: str, gateway: Gateway):
        super().__init__()
        self.name, self.gateway = name, gateway
        self._takes_context, self._takes_handoff = _takes(gateway)

    def on_receive(self, message: Any) -> Any:
        if not isinstance(message, (CallRequest, ToolRequest)):
            log.warning("agent %s ignored unexpected message %r", self.name, message)
            return None
        try:
            self.dispatcher.submit(partial(self._work, message))
        except BaseException as exc:  # noqa: BLE001 - no thread to run it on: only this call's run hears of it
            self._crashed(message, exc)
        return None

    def _work(self, message: CallRequest | ToolRequest, resume: Callable[[], Completion] | None = None,
              tries: _Tries | None = None) -> None:
        try:
            if isinstance(message, ToolRequest):
                self._run_tool(message)
            else:
                self._call(message, resume, tries)
        except pykka.ActorDeadError:
            pass  # the run ended while this agent worked: nobody to tell
        except BaseException as exc:  # noqa: BLE001 - contained: only this call's run hears of it
            self._crashed(message, exc)

    def _crashed(self, message: CallRequest | ToolRequest, exc: BaseException) -> None:
        # Not an error here: the run's waiter is told, and reports it.
        log.info("agent %s died on call %s", self.name, message.call_id, exc_info=exc)
        try:
            message.reply_to.tell(AgentCrashed(message.call_id, self.name, f"{type(exc).__name__}: {exc}"))
        except pykka.ActorDeadError:
            pass  # the run has ended already

    def _run_tool(self, message: ToolRequest) -> None:
        try:
            result, is_error = message.tool.run(message.arguments)
            if not isinstance(result, str):
                raise TypeError(f"Tool.run returned a {type(result).__name__}, not a string")
        except Exception as exc:  # noqa: BLE001 - the model is told, the run goes on
            result, is_error = f"error: {message.tool.name} failed: {type(exc).__name__}: {exc}", True
        with self.dispatcher.ending():
            message.reply_to.tell(ToolCompleted(message.call_id, message.tool_call_id, message.tool.name,
                                                result, bool(is_error)))

    def _resume(self, tries: _Tries, resume: Callable[[], Completion]) -> None:
        """The call overran its timeout (on the watchdog's thread): the rest of it runs on another thread.

        The thread of the try stays with the model until it returns, but no longer counts
        against the dispatcher's threads: however many tries hang, the other work gets threads.
        """
        self.dispatcher.release(tries.running)
        try:
            self.dispatcher.submit(partial(self._work, tries.message, resume, tries))
        except BaseException as exc:  # noqa: BLE001 - no thread to run it on: only this call's run hears of it
            self._crashed(tries.message, exc)

    def _call(self, message: CallRequest, resume: Callable[[], Completion] | None = None,
              tries: _Tries | None = None) -> None:
        reply_to = message.reply_to

        def report(failure: AttemptFailure) -> None:
            reply_to.tell(AttemptFailed(message.call_id, self.name, failure))

        live = message.live
        overtaken = False
        try:
            if resume is not None:
                assert tries is not None
                tries.running = self.dispatcher.running()  # its next tries run here
                completion = resume()
            elif self._takes_context and self._takes_handoff:
                completion = self.gateway.complete(message.request, report, context=message.context,
                                                   on_delta=live.delta if live is not None else None,
                                                   handoff=_Tries(self, message, self.dispatcher.running()))
            else:
                completion = self._complete_as_before(message, report)
        except Overtaken:
            overtaken = True
            return  # settled as a timeout and gone on elsewhere: this late answer is dropped
        except CallFailed:
            return  # its last attempt was reported with gave_up=True
        except pykka.ActorDeadError:
            return  # the run ended while this call was out: nobody to tell
        except Exception as exc:  # noqa: BLE001 - a bug or a local-model start-up failure: still an event
            report(AttemptFailure(attempt=1, error_kind="internal", message=f"{type(exc).__name__}: {exc}",
                                  retryable=False, gave_up=True))
            return
        finally:
            if live is not None and not overtaken:
                live.end()
        with self.dispatcher.ending():
            reply_to.tell(CallCompleted(message.call_id, self.name, completion))

    def _complete_as_before(self, message: CallRequest, report: Callable[[AttemptFailure], None]) -> Completion:
        """A gateway whose ``complete`` predates ``context=`` or ``handoff=`` is called without them
        (without ``handoff`` an in-process model under a timeout runs on a worker thread)."""
        kwargs: dict[str, Any] = {"on_delta": message.live.delta if message.live is not None else None}
        if self._takes_context:
            kwargs["context"] = message.context
        if self._takes_handoff:
            kwargs["handoff"] = _Tries(self, message, self.dispatcher.running())
        return self.gateway.complete(message.request, report, **kwargs)
