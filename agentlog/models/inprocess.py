"""In-process models: an object or a function that answers a ``ModelRequest`` with a ``Completion``.

The gateway calls them as it calls a remote model: the intent is in the log before the
call, each failed try is an event, transient failures (``ModelUnavailable``, a timeout) are
retried by the same policy, and the answer is reused by request hash. The call's context
(run, agent, step, attempt) travels beside the recorded request, never inside it, so it does
not change the request's hash.

Under the run's timeout a call made by an agent runs inline, on the thread that makes it,
watched by one timer thread per process (``WATCHDOG``, a heap of deadlines). A call that
does not return in time is settled by the watchdog as a ``timeout`` failure, exactly once:
the rest of the call (the failure's event, the retries) goes on on another thread, and the
late answer, when the model returns at last, is dropped (``Overtaken``) and its thread freed.
A direct ``Gateway.complete`` (no thread to hand the rest to) runs the model on a worker
thread and waits at most the timeout. With no timeout it runs inline, as the offline model does.
"""

from __future__ import annotations

import heapq
import importlib
import itertools
import logging
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import msgspec

from .types import AttemptFailure, Completion, ModelNotConfigured

log = logging.getLogger(__name__)


class CallContext(msgspec.Struct, frozen=True, kw_only=True):
    """Who asks: the run, the agent, the pipeline step, the step's attempt and the call id.

    ``attempt`` counts re-asks of a step after an invalid answer; ``round`` counts rounds of
    tool results within an attempt.
    """

    run_id: str = ""
    agent: str = ""
    step: str = ""
    attempt: int = 1
    call_id: str = ""
    round: int = 0


class ModelRequest(msgspec.Struct, frozen=True, kw_only=True):
    """What an in-process model is asked: the recorded request, and the context of the call.

    ``messages``, ``parameters`` (temperature, max_tokens, ...), ``tools`` and
    ``response_format`` are the request as the log records it (a copy: changing them
    changes nothing recorded). ``retry`` is 0 on the first try of a call, n on its n-th retry.
    """

    run_id: str
    agent: str
    step: str
    attempt: int
    call_id: str
    round: int
    retry: int
    model: str
    messages: list[dict[str, Any]]
    parameters: dict[str, Any]
    tools: list[dict[str, Any]]
    response_format: dict[str, Any] | None

    @property
    def schema_name(self) -> str | None:
        """The name of the JSON schema the answer must follow (``Findings``, ``Review``), if any."""
        return ((self.response_format or {}).get("json_schema") or {}).get("name")

    @property
    def prompt(self) -> str:
        """The text of the last user message ("" if there is none)."""
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return str(message.get("content") or "")
        return ""


@runtime_checkable
class Model(Protocol):
    """An in-process model: ``complete(request)`` returns a ``Completion`` (or a ``str``, its content).

    Raise ``ModelUnavailable`` for a transient failure (it is retried); any other
    exception fails the call, as a remote model's 4xx does. A plain function of the
    request is a model too.
    """

    def complete(self, request: ModelRequest) -> Completion | str: ...


ModelLike = Model | Callable[[ModelRequest], Any]


class ModelUnavailable(Exception):
    """Raised by an in-process model for a transient failure: the call is retried like a 503."""


class ModelTimeout(Exception):
    """An in-process call did not return within the gateway's timeout."""


class Overtaken(Exception):
    """Raised on the thread of an in-process call its timeout overtook, once the model returns:
    the call was settled as a ``timeout`` failure and went on elsewhere; this answer is dropped."""


class BadAnswer(TypeError):
    """An in-process model returned something that is not a completion."""


class FunctionModel:
    """A model made of a function ``fn(request) -> Completion | str``, called by ``name``.

    The name is what the run records as the agent's model (and what the request hash
    covers): give different functions different names.
    """

    def __init__(self, fn: Callable[[ModelRequest], Completion | str], *, name: str | None = None):
        if not callable(fn):
            raise TypeError(f"FunctionModel needs a function of the request, not {type(fn).__name__}")
        self.fn = fn
        self.name = name or f"function:{getattr(fn, '__name__', type(fn).__name__)}"

    def complete(self, request: ModelRequest) -> Completion | str:
        return self.fn(request)

    def __repr__(self) -> str:
        return f"FunctionModel({self.name!r})"


def is_model_object(value: Any) -> bool:
    """Whether ``value`` has a ``complete`` method: ``isinstance(value, Model)`` without the cost of
    a runtime protocol check (~10 us, paid for every run that names its models)."""
    return callable(getattr(value, "complete", None))


def model_name(model: ModelLike) -> str:
    """The name a model is recorded under: its ``name``, else derived from its function or class."""
    name = getattr(model, "name", None)
    if isinstance(name, str) and name:
        return name
    if is_model_object(model):
        return f"python-object:{type(model).__qualname__}"
    return f"function:{getattr(model, '__name__', type(model).__name__)}"


def named_models(models: ModelLike | Mapping[str, ModelLike] | None) -> dict[str, ModelLike]:
    """``{name: model}`` from one model (under its own name) or a mapping of names to models."""
    if models is None:
        return {}
    if isinstance(models, Mapping):
        return {str(name): _check_model(model, repr(name)) for name, model in models.items()}
    return {model_name(models): _check_model(models, "given")}


def _check_model(model: Any, what: str) -> ModelLike:
    if not callable(model) and not is_model_object(model):
        raise TypeError(f"model {what} is a {type(model).__name__}: give an object with complete(request) "
                        f"or a function of the request")
    return model


# --- python:MODULE:FACTORY ------------------------------------------------------------


def load_python_model(spec_name: str, search_path: Sequence[str] = ()) -> ModelLike:
    """Import ``MODULE`` and call ``FACTORY()``; raise ``ModelNotConfigured`` in one line if it fails."""
    module_name, _, factory_name = spec_name.partition(":")
    label = f"python:{spec_name}"
    added = [p for p in search_path if p not in sys.path]
    sys.path[:0] = added
    try:
        try:
            target: Any = importlib.import_module(module_name)
        except Exception as exc:  # ImportError, or the module's own error while importing
            raise ModelNotConfigured(f"model {label!r}: cannot import {module_name!r}: "
                                     f"{type(exc).__name__}: {exc}") from None
    finally:
        for p in added:
            if p in sys.path:
                sys.path.remove(p)
    for part in factory_name.split("."):
        if not hasattr(target, part):
            raise ModelNotConfigured(f"model {label!r}: {module_name} has no attribute {factory_name!r}")
        target = getattr(target, part)
    if is_model_object(target) and not isinstance(target, type):
        return target  # a model object named directly
    if not callable(target):
        raise ModelNotConfigured(f"model {label!r}: {factory_name} is a {type(target).__name__}, not a factory")
    try:
        model = target()
    except Exception as exc:
        hint = " (a factory takes no arguments and returns a model)" if isinstance(exc, TypeError) else ""
        raise ModelNotConfigured(f"model {label!r}: the factory {factory_name}() raised "
                                 f"{type(exc).__name__}: {exc}{hint}") from None
    if not callable(model) and not is_model_object(model):
        raise ModelNotConfigured(f"model {label!r}: the factory {factory_name}() returned a "
                                 f"{type(model).__name__}, not a model (an object with complete(request) "
                                 f"or a function of the request)")
    return model


# --- calling -------------------------------------------------------------------------


def build_request(request: dict[str, Any], context: CallContext | None, retry: int) -> ModelRequest:
    """The ``ModelRequest`` for one try of a recorded request, a copy so the run's stays intact:
    every dict and list (and tuple) is new, the strings and numbers, which cannot change, are
    shared (``msgspec.to_builtins``: half the cost of a MessagePack round trip, which copied the
    text too)."""
    copy = msgspec.to_builtins(request)
    context = context or CallContext()
    messages = copy.pop("messages", [])
    model = str(copy.pop("model", ""))
    tools = copy.pop("tools", None) or []
    response_format = copy.pop("response_format", None)
    return ModelRequest(
        run_id=context.run_id, agent=context.agent, step=context.step, attempt=context.attempt,
        call_id=context.call_id, round=context.round, retry=retry, model=model, messages=messages,
        parameters=copy, tools=tools, response_format=response_format,
    )


def as_completion(answer: Any, name: str, latency_ms: float = 0.0) -> Completion:
    """Check what a model returned; raise ``BadAnswer`` saying what is wrong. A completion
    without a model name or a latency gets ``name`` and ``latency_ms`` (in one copy)."""
    if type(answer) is Completion and _well_typed(answer):  # the common case first, no copy
        checked = answer  # (a Struct's constructor checks nothing: ``_well_typed`` did)
    elif isinstance(answer, str):
        return Completion(content=answer, model=name, latency_ms=latency_ms)
    elif not isinstance(answer, Completion):
        raise BadAnswer(f"model {name!r} returned a {type(answer).__name__}, not a Completion or a str")
    elif _well_typed(answer):
        checked = answer
    else:
        try:
            checked = msgspec.convert(msgspec.to_builtins(answer), Completion)
        except (msgspec.ValidationError, TypeError) as exc:
            raise BadAnswer(f"model {name!r} returned an invalid Completion: {exc}") from None
    if checked.model and checked.latency_ms:
        return checked
    return msgspec.structs.replace(checked, model=checked.model or name, latency_ms=checked.latency_ms or latency_ms)


def _well_typed(c: Completion) -> bool:
    """Whether every field of ``c`` has its exact type (what ``msgspec.convert`` would accept as is)."""
    return (type(c.content) is str and type(c.prompt_tokens) is int and type(c.completion_tokens) is int
            and type(c.latency_ms) is float and type(c.model) is str and type(c.tool_calls) is list
            and (not c.tool_calls
                 or all(type(call) is tuple and len(call) == 3 and type(call[0]) is str and type(call[1]) is str
                        and type(call[2]) is str for call in c.tool_calls)))


def invoke(model: ModelLike) -> Callable[[ModelRequest], Any]:
    """The function to call for ``model`` (no ``isinstance`` on the protocol: it costs ~10 us a call);
    a ``FunctionModel``'s own function (its ``complete`` only calls it)."""
    if type(model) is FunctionModel:
        return model.fn
    complete = getattr(model, "complete", None)
    return complete if callable(complete) else model  # type: ignore[return-value]


def classify(exc: BaseException, name: str, timeout: float | None) -> tuple[str, bool, str]:
    """``(error_kind, retryable, message)`` for what an in-process call raised."""
    match exc:
        case ModelTimeout():
            return "timeout", True, f"in-process model {name!r} did not answer within {timeout or 0:g} s"
        case ModelUnavailable():
            return "unavailable", True, f"{exc}" or "the model is unavailable"
        case BadAnswer():
            return "bad_response", False, str(exc)
        case _:
            return "model_error", False, f"{type(exc).__name__}: {exc}"


def attempt(fn: Callable[[ModelRequest], Any], name: str, request: dict[str, Any], context: CallContext | None,
            retry: int, timeout: float | None) -> Completion:
    """One try: run the model on a worker thread, wait at most ``timeout``, check its answer.

    Without a timeout the model runs inline, on the caller's thread (no thread hop).
    """
    model_request = build_request(request, context, retry)
    started = time.perf_counter()
    answer = fn(model_request) if timeout is None else WORKERS.run(fn, model_request, timeout)
    return as_completion(answer, name, (time.perf_counter() - started) * 1000)


def watched_attempt(fn: Callable[[ModelRequest], Any], name: str, request: dict[str, Any],
                    context: CallContext | None, retry: int, timeout: float,
                    on_expiry: Callable[..., None], *args: Any) -> Completion:
    """One try run inline on this thread, its deadline watched by ``WATCHDOG``.

    If the deadline comes first, ``on_expiry(*args)`` is called (on the watchdog's thread) and,
    once the model returns here, this raises ``Overtaken``: whatever it answered is dropped.
    """
    model_request = build_request(request, context, retry)
    watchdog = WATCHDOG
    deadline = watchdog.arm(timeout, on_expiry, *args)
    started = time.perf_counter()
    try:
        answer = fn(model_request)
    except BaseException:
        if not watchdog.settle(deadline):
            raise Overtaken() from None
        raise
    elapsed = (time.perf_counter() - started) * 1000
    if not watchdog.settle(deadline):
        raise Overtaken()
    return as_completion(answer, name, elapsed)


def failure(exc: BaseException, name: str, timeout: float | None, number: int, max_attempts: int,
            redact: Callable[[str], str]) -> AttemptFailure:
    kind, retryable, message = classify(exc, name, timeout)
    return AttemptFailure(attempt=number, error_kind=kind, message=redact(message)[:2000], retryable=retryable,
                          gave_up=not retryable or number >= max_attempts)


class _Workers:
    """Daemon threads that run in-process model calls, so that a caller can stop waiting.

    Python cannot stop a thread: a worker whose call outlives its timeout keeps running
    it and is reused only once it returns. Idle workers are kept for the next calls (a
    thread hop costs ~15 µs; starting a thread ~120 µs).
    """

    def __init__(self, keep_idle: int = 16):
        self._lock = threading.Lock()
        self._idle: list[queue.SimpleQueue[Any]] = []
        self._keep_idle = keep_idle

    def run(self, fn: Callable[[Any], Any], arg: Any, timeout: float | None) -> Any:
        with self._lock:
            inbox = self._idle.pop() if self._idle else None
        if inbox is None:
            inbox = queue.SimpleQueue()
            threading.Thread(target=self._serve, args=(inbox,), name="agentlog-model", daemon=True).start()
        outbox: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()
        inbox.put((fn, arg, outbox))
        try:
            ok, value = outbox.get(timeout=timeout)
        except queue.Empty:
            raise ModelTimeout() from None
        if ok:
            return value
        raise value

    def _serve(self, inbox: queue.SimpleQueue[Any]) -> None:
        while True:
            fn, arg, outbox = inbox.get()
            try:
                result: tuple[bool, Any] = (True, fn(arg))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller, who records it
                result = (False, exc)
            with self._lock:
                keep = len(self._idle) < self._keep_idle
                if keep:
                    self._idle.append(inbox)  # before answering, so the caller's next call finds it
            outbox.put(result)
            del fn, arg, outbox, result
            if not keep:
                return


WORKERS = _Workers()


class Watchdog:
    """One timer thread for the process and the deadlines of the calls in flight: each settles once.

    ``arm(seconds, on_expiry, *args)`` registers a deadline and returns its number; ``settle(number)``
    is the caller's claim once its call returned: ``True`` if it came first (the deadline is
    off), ``False`` if the deadline passed first and ``on_expiry(*args)`` was (or is being) called.
    (The arguments are kept beside the function, not bound into a ``partial`` per call.)
    The claim is one atomic ``dict.pop`` by whichever side comes first, so an answer at the
    deadline's instant settles the call once.

    Arming is two appends, no lock: the timer thread drains the new deadlines into its heap
    at least every ``tick`` seconds, dropping those of calls settled already, and is woken
    only for a deadline earlier than the one it sleeps until. A deadline settled once in the
    heap stays there until it comes or until settled ones are over half the heap, which is
    then rebuilt without them: the heap holds at most twice the calls in flight, and a few. The
    thread ends after ``idle_seconds`` with no deadline; the next ``arm`` starts another.
    """

    def __init__(self, idle_seconds: float = 2.0, tick: float = 1.0):
        self.idle_seconds, self.tick = idle_seconds, tick
        self._live: dict[int, tuple[Callable[..., None], tuple[Any, ...]]] = {}  # number -> (on_expiry, args),
        # until settled either way
        self._new: deque[tuple[float, int]] = deque()  # (when, number) armed since the timer last looked
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._wake_at = 0.0  # when the timer thread looks next
        self._running = False

    def arm(self, seconds: float, on_expiry: Callable[..., None], *args: Any) -> int:
        when = time.monotonic() + seconds
        number = next(self._numbers)
        self._live[number] = (on_expiry, args)
        self._new.append((when, number))
        # Read after the append: the timer writes these before it looks at ``_new`` (under its lock).
        if not self._running or when < self._wake_at:
            with self._lock:
                if not self._running:
                    try:
                        self._start()
                    except BaseException:
                        self._live.pop(number, None)
                        raise
                self._changed.notify()
        return number

    def settle(self, number: int) -> bool:
        return self._live.pop(number, None) is not None

    def _start(self) -> None:
        threading.Thread(target=self._watch, name="agentlog-model-watchdog", daemon=True).start()
        self._running = True

    def _watch(self) -> None:
        heap: list[tuple[float, int]] = []
        live, new = self._live, self._new
        with self._lock:
            while True:
                self._wake_at = 0.0  # while it works, no arm wakes it: it drains ``_new`` before it waits
                while new:
                    entry = new.popleft()
                    if entry[1] in live:  # the calls that returned already are dropped here
                        heapq.heappush(heap, entry)
                now = time.monotonic()
                due = []
                while heap and (heap[0][0] <= now or heap[0][1] not in live):
                    when, number = heapq.heappop(heap)
                    if when <= now:
                        expiry = live.pop(number, None)  # the timer's claim
                        if expiry is not None:
                            due.append(expiry)
                if len(heap) > 2 * len(live) + 32:  # mostly settled: rebuilt without them (O(n), rarely)
                    heap = [entry for entry in heap if entry[1] in live]
                    heapq.heapify(heap)
                if due:
                    self._lock.release()
                    try:
                        for expiry in due:
                            self._expire(expiry)
                    finally:
                        del due, expiry
                        self._lock.acquire()
                    continue
                if heap or live:
                    self._wake_at = min(heap[0][0] if heap else now + self.tick, now + self.tick)
                    if not new:
                        self._changed.wait(self._wake_at - now)
                    continue
                self._wake_at = now + self.idle_seconds
                if not new:
                    self._changed.wait(self.idle_seconds)
                if heap or new or live:
                    continue
                self._running = False
                if not new:  # an arm that read ``_running`` before this starts no thread: look once more
                    return
                self._running = True

    @staticmethod
    def _expire(due: tuple[Callable[..., None], tuple[Any, ...]]) -> None:
        on_expiry, args = due
        try:
            on_expiry(*args)
        except BaseException:  # noqa: BLE001 - the timer must go on for the other calls
            log.exception("an in-process call's timeout handler failed")


WATCHDOG = Watchdog()
