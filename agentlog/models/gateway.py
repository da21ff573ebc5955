"""The model gateway: one ``complete(request)`` for every model a run may name.

In-process models (objects or functions, registered by name or named ``python:MODULE:FACTORY``)
are called under the same timeout and retry policy (``inprocess.py``): inline with a watchdog
when the caller can hand the rest of a call to another thread, else on a worker thread.

Remote and local models are reached only through the ``openai`` client (chat
completions), with its own retries off: tenacity retries transient failures (429, 408,
409, 5xx, timeouts, connection errors, unreadable responses) with bounded, jittered
exponential backoff, and every failed attempt is reported so it can be logged.

Given an ``on_delta`` callback, a call is streamed (server-sent events, usage in the last
chunk) and each piece is reported as it arrives; the ``Completion`` is the same as the
unstreamed call's. A connection cut mid-stream is a retryable failure like any other. A
server that does not stream (it answers with one JSON body, or refuses ``stream``) is
called without streaming from then on.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import msgspec
import tenacity

if TYPE_CHECKING:
    import openai

from . import inprocess, offline
from .inprocess import CallContext, ModelLike
from .spec import ModelSpec, parse_model
from .types import AttemptFailure, CallFailed, Completion, Delta, ModelNotConfigured

log = logging.getLogger(__name__)

NO_MODEL_HINT = (
    "no model configured: set OPENAI_API_KEY (or --base-url URL for an OpenAI-compatible "
    "server), pass --model, or use --model offline for the built-in deterministic stand-in"
)

# A CPU-bound local model reads a long prompt slowly; don't give up on it as on a remote API.
LOCAL_MIN_TIMEOUT = 600.0

_WIRE_KEYS = ("temperature", "max_tokens", "response_format", "tools", "tool_choice", "seed", "top_p", "stop")


class Endpoint(msgspec.Struct, frozen=True):
    """Where bare and ``openai:`` model names go. The key is held in memory only."""

    base_url: str | None = None
    api_key: str | None = msgspec.field(default=None)

    @classmethod
    def from_env(cls, base_url: str | None = None, api_key: str | None = None) -> "Endpoint":
        return cls(
            base_url=base_url or os.environ.get("OPENAI_BASE_URL") or None,
            api_key=api_key or os.environ.get("OPENAI_API_KEY") or None,
        )

    @property
    def configured(self) -> bool:
        return bool(self.api_key or self.base_url)

    def __repr__(self) -> str:  # never print the key
        return f"Endpoint(base_url={self.base_url!r}, api_key={'set' if self.api_key else None})"


class RetryPolicy(msgspec.Struct, frozen=True):
    max_attempts: int = 5
    initial_wait: float = 1.0
    max_wait: float = 30.0


class _Transient(Exception):
    pass


def _retrying(policy: RetryPolicy, sleep: Callable[[float], None]) -> tenacity.Retrying:
    """Bounded, jittered exponential backoff over ``_Transient``; the last attempt's error is raised."""
    return tenacity.Retrying(
        stop=tenacity.stop_after_attempt(policy.max_attempts),
        wait=tenacity.wait_random_exponential(multiplier=policy.initial_wait, max=policy.max_wait),
        retry=tenacity.retry_if_exception_type(_Transient),
        sleep=sleep,
        reraise=True,
    )


def _openai():  # noqa: ANN202 - the module
    """The ``openai`` package, imported on first use: it takes ~0.5 s to import, and reading,
    replaying or verifying a log never calls a model."""
    import openai

    return openai


def load_client() -> None:
    """Import the ``openai`` client now rather than in the first call that needs it: for a
    long-lived process that will call models, e.g. a worker before it claims its first run
    (else every run it claims first waits for the import, and its CPU counts in theirs)."""
    _openai()


def classify(exc: BaseException) -> tuple[str, bool]:
    """``(error_kind, retryable)`` for an exception raised by the openai client."""
    openai = _openai()
    match exc:
        case openai.APITimeoutError():
            return "timeout", True
        case openai.APIConnectionError():
            return "connection", True
        case openai.RateLimitError():
            return "rate_limit", True
        case openai.APIStatusError(status_code=code) if code >= 500:
            return "server_error", True
        case openai.APIStatusError(status_code=408 | 409 as code):
            return f"http_{code}", True
        case openai.APIStatusError(status_code=code):
            return f"http_{code}", False
        case _:
            return "bad_response", True


class _SharedClients:
    """``openai`` clients shared by every gateway of the process, one per endpoint.

    A new client costs ~36 ms of CPU on its first call and has its own connection pool;
    gateways of concurrent runs share one instead (docs/benchmarks.md, benchmark 4). A
    client is closed when the last gateway using it closes.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: dict[tuple[str | None, str, float | None], tuple[openai.OpenAI, int]] = {}

    def acquire(self, base_url: str | None, api_key: str, timeout: float | None) -> openai.OpenAI:
        key = (base_url, api_key, timeout)
        with self._lock:
            client, users = self._clients.get(key) or (
                _openai().OpenAI(api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout), 0)
            self._clients[key] = (client, users + 1)
            return client

    def release(self, client: openai.OpenAI) -> None:
        with self._lock:
            for key, (held, users) in list(self._clients.items()):
                if held is client:
                    if users > 1:
                        self._clients[key] = (held, users - 1)
                    else:
                        del self._clients[key]
                        held.close()
                    return


_SHARED = _SharedClients()


class Gateway:
    """Completes requests for every model a run uses. Thread-safe; one per run or process.

    ``timeout`` (seconds, ``None`` for none) bounds each request, in-process calls too (see
    ``complete``'s ``handoff``).
    ``models`` is one in-process model (under its name) or maps names to them (see
    ``register``); ``python_path`` lists directories searched first when a
    ``python:MODULE:FACTORY`` model is imported.
    """

    def __init__(
        self,
        endpoint: Endpoint | None = None,
        *,
        retry: RetryPolicy = RetryPolicy(),
        timeout: float | None = 120.0,
        sleep: Callable[[float], None] = time.sleep,
        models: ModelLike | Mapping[str, ModelLike] | None = None,
        python_path: Sequence[str] = (),
    ):
        self.endpoint = endpoint if endpoint is not None else Endpoint.from_env()
        self.retry = retry
        self.timeout = timeout
        self._sleep = sleep
        self._lock = threading.Lock()
        self._clients: dict[str, tuple[openai.OpenAI, str]] = {}
        self._local: dict[str, Any] = {}
        self._unstreamed: set[str] = set()  # specs whose server answered a stream request otherwise
        self._models: dict[str, ModelLike] = {}
        self._calls: dict[str, Callable[[inprocess.ModelRequest], Any]] = {}  # name -> what a call runs
        self._python_path = tuple(python_path)
        for name, model in inprocess.named_models(models).items():
            self.register(name, model)

    def on_close(self, fn: Callable[["Gateway"], None]) -> None:
        """Call ``fn(gateway)`` whenever this gateway closes (once however often it is given):
        the runtime ends the gateway's idle agents with it."""
        # Not under ``_lock``: a subclass that never called ``__init__`` (one that only answers
        # in-process) has none; a dict's setdefault is atomic.
        self.__dict__.setdefault("_on_close", {})[fn] = None

    def register(self, name: str, model: ModelLike) -> None:
        """Answer requests for the model ``name`` with the in-process ``model``.

        Raises ``ValueError`` if ``name`` already stands for another model here.
        """
        with self._lock:
            held = self._models.get(name)
            if held is not None and held is not model:
                raise ValueError(f"model name {name!r} already stands for another in-process model in this gateway")
            self._models[name] = model
            self._calls[name] = inprocess.invoke(model)

    def _in_process(self, name: str) -> Callable[[inprocess.ModelRequest], Any] | None:
        """What a call to the in-process model ``name`` runs, importing a ``python:`` one on first use."""
        fn = self._calls.get(name)
        if fn is not None or not name.startswith("python:"):
            return fn
        spec = parse_model(name)
        with self._lock:
            if name not in self._models:
                model = inprocess.load_python_model(spec.name, self._python_path)
                self._models[name] = model
                self._calls[name] = inprocess.invoke(model)
            return self._calls[name]

    # --- configuration checks, before a run starts --------------------------------

    def check(self, model: str) -> ModelSpec:
        """Raise ``ModelNotConfigured`` if ``model`` cannot be reached with this configuration.

        A ``python:`` model is imported and built here, so a broken one fails before the run starts.
        """
        if model in self._models:
            return ModelSpec("python", model, model)
        spec = parse_model(model)
        if spec.provider == "python":
            self._in_process(spec.text)
        if spec.provider == "openai" and not self.endpoint.configured:
            raise ModelNotConfigured(NO_MODEL_HINT)
        if spec.provider == "local":
            from . import local

            if not local.local_available():
                raise ModelNotConfigured(f"model {model!r} needs the local extra: {local.LOCAL_EXTRA_HINT}")
            local.resolve_model(None if spec.name == "smollm2" else spec.name)
        return spec

    def _client(self, spec: ModelSpec) -> tuple[openai.OpenAI, str]:
        """The client for a spec and the model name to send."""
        with self._lock:
            if spec.text in self._clients:
                return self._clients[spec.text]
            if spec.provider == "local":
                from . import local

                server = local.LocalServer(local.resolve_model(None if spec.name == "smollm2" else spec.name))
                server.start()
                self._local[spec.text] = server
                base_url, key, wire = server.base_url, "local", server.model_name
                timeout = max(self.timeout, LOCAL_MIN_TIMEOUT) if self.timeout is not None else None
            else:
                if not self.endpoint.configured:
                    raise ModelNotConfigured(NO_MODEL_HINT)
                base_url, key, wire = self.endpoint.base_url, self.endpoint.api_key or "unused", spec.name
                timeout = self.timeout
            client = _SHARED.acquire(base_url, key, timeout)
            self._clients[spec.text] = (client, wire)
            return client, wire

    def close(self) -> None:
        with self._lock:
            for client, _ in self._clients.values():
                _SHARED.release(client)
            self._clients.clear()
            for server in self._local.values():
                server.close()
            self._local.clear()
        for fn in list(self.__dict__.get("_on_close", ())):
            fn(self)

    # --- calls -----------------------------------------------------------------

    def complete(
        self, request: dict[str, Any], on_failure: Callable[[AttemptFailure], None] = lambda f: None,
        *, on_delta: Callable[[Delta], None] | None = None, context: CallContext | None = None,
        handoff: Callable[[Callable[[], Completion]], None] | None = None,
    ) -> Completion:
        """Complete ``request``; report each failed attempt; raise ``CallFailed`` on giving up.

        With ``on_delta``, the answer is streamed and each piece reported as it arrives.
        ``context`` (who asks: run, agent, step, attempt) is handed to in-process models; it
        is not part of the request and so not of its hash.

        An in-process model under a timeout runs on a worker thread, this one waiting at most
        the timeout; given ``handoff`` (a function that runs a callable on another thread) it
        runs inline instead, on this thread. If it overruns the timeout, ``handoff(resume)``
        is called from the watchdog's thread: ``resume()`` reports the timeout, retries by the
        policy and returns the answer or raises ``CallFailed``, as this call would have; and
        here, once the model returns at last, ``inprocess.Overtaken`` is raised (its answer dropped).
        """
        name = request["model"]
        fn = self._calls.get(name)
        if fn is None and name.startswith("python:"):
            fn = self._in_process(name)
        if fn is not None:
            if handoff is None or self.timeout is None:
                return self._complete_in_process(name, fn, request, on_failure, context, handoff)
            try:  # the first try inline, as ``_complete_in_process`` would make it (one call fewer)
                return inprocess.watched_attempt(fn, name, request, context, 0, self.timeout, self._overtaken,
                                                 name, fn, request, on_failure, context, handoff, 1)
            except inprocess.Overtaken:
                raise
            except Exception as exc:  # recorded by the policy's loop, with the tries after it
                return self._complete_in_process(name, fn, request, on_failure, context, handoff, 1, exc)
        spec = parse_model(name)
        if spec.provider == "offline":
            return offline.complete(request)
        client, wire_model = self._client(spec)
        kwargs = {k: request[k] for k in _WIRE_KEYS if request.get(k) is not None}
        if spec.provider == "local" and "response_format" in kwargs:
            from . import local

            # llama.cpp's server takes the schema as {"type": "json_object", "schema": ...}.
            kwargs["response_format"] = local.llama_response_format(kwargs["response_format"])
        policy = self.retry
        retrying = _retrying(policy, self._sleep)
        last: AttemptFailure | None = None
        try:
            for attempt in retrying:
                with attempt:
                    number = attempt.retry_state.attempt_number
                    started = time.perf_counter()
                    try:
                        refused = False
                        if on_delta is not None and spec.text not in self._unstreamed:
                            completion = self._streamed(spec.text, client, wire_model, request["messages"],
                                                        kwargs, _reporter(on_delta, number))
                            if completion is not None:
                                return msgspec.structs.replace(
                                    completion, latency_ms=(time.perf_counter() - started) * 1000)
                            refused = True
                        response = client.chat.completions.create(
                            model=wire_model, messages=request["messages"], **kwargs
                        )
                        if refused:  # the plain request worked: this server does not stream
                            self._unstreamed.add(spec.text)
                        return _completion(response, (time.perf_counter() - started) * 1000)
                    except Exception as exc:  # classified below; nothing escapes unrecorded
                        kind, retryable = classify(exc)
                        gave_up = not retryable or number >= policy.max_attempts
                        # A foreign exception (a bug, a broken client) is named by its type.
                        text = str(exc) if isinstance(exc, _openai().OpenAIError) else f"{type(exc).__name__}: {exc}"
                        last = AttemptFailure(
                            attempt=number, error_kind=kind, message=self._redact(text)[:2000],
                            retryable=retryable, gave_up=gave_up,
                        )
                        on_failure(last)
                        if gave_up:
                            raise CallFailed(last) from exc
                        raise _Transient() from exc
        except _Transient:  # pragma: no cover - reraise=True means the last attempt raised CallFailed
            raise CallFailed(last) from None
        raise AssertionError("unreachable")

    def _streamed(self, spec: str, client: openai.OpenAI, model: str, messages: Any, kwargs: dict[str, Any],
                  report: Callable[[str], None]) -> Completion | None:
        """The answer, streamed; ``None`` if the server refused to stream (ask it plainly)."""
        openai = _openai()
        try:
            stream = client.chat.completions.create(
                model=model, messages=messages, stream=True, stream_options={"include_usage": True}, **kwargs)
        except openai.APIStatusError as exc:
            # e.g. 400 "stream is not supported"; a 404 for an unknown model is the call's own failure.
            if exc.status_code in _NO_STREAM_STATUSES and "stream" in str(exc).lower():
                return None
            raise
        with stream:
            kind = stream.response.headers.get("content-type", "").split(";")[0].strip().lower()
            if kind == "application/json":  # a server that ignores ``stream``: the whole answer at once
                self._unstreamed.add(spec)
                body = json.loads(stream.response.read())
                from openai.types.chat import ChatCompletion

                return _completion(ChatCompletion.model_validate(body), 0.0)
            if kind != "text/event-stream":
                raise ValueError(f"a stream request was answered with {kind or 'no content type'}")
            return _assemble(stream, report)

    def _complete_in_process(self, name: str, fn: Callable[[inprocess.ModelRequest], Any], request: dict[str, Any],
                             on_failure: Callable[[AttemptFailure], None], context: CallContext | None,
                             handoff: Callable[[Callable[[], Completion]], None] | None, number: int = 1,
                             failed: Exception | None = None) -> Completion:
        """Tries ``number``, ``number + 1``, ... of a call (try ``number`` already ``failed``, if given),
        by the policy the remote path's tenacity loop follows: same attempts, same backoff."""
        policy, timeout = self.retry, self.timeout
        while True:
            if failed is None:
                try:
                    if timeout is None or handoff is None:
                        return inprocess.attempt(fn, name, request, context, number - 1, timeout)
                    return inprocess.watched_attempt(fn, name, request, context, number - 1, timeout, self._overtaken,
                                                     name, fn, request, on_failure, context, handoff, number)
                except inprocess.Overtaken:
                    raise
                except Exception as exc:  # classified below; nothing escapes unrecorded
                    failed = exc
            last = inprocess.failure(failed, name, timeout, number, policy.max_attempts, self._redact)
            on_failure(last)
            if last.gave_up:
                raise CallFailed(last) from failed
            failed = None
            self._sleep(_backoff(policy, number))
            number += 1

    def _overtaken(self, name: str, fn: Callable[[inprocess.ModelRequest], Any], request: dict[str, Any],
                   on_failure: Callable[[AttemptFailure], None], context: CallContext | None,
                   handoff: Callable[[Callable[[], Completion]], None], number: int) -> None:
        """Try ``number`` overran the timeout (on the watchdog's thread): the rest of the call goes elsewhere."""
        handoff(partial(self._complete_in_process, name, fn, request, on_failure, context, handoff, number,
                        inprocess.ModelTimeout()))

    def _redact(self, text: str) -> str:
        key = self.endpoint.api_key
        return text.replace(key, "[redacted]") if key else text


class _Attempted:
    """What tenacity's wait strategies read of its retry state: the number of the attempt that failed."""

    __slots__ = ("attempt_number",)

    def __init__(self, attempt_number: int):
        self.attempt_number = attempt_number


def _backoff(policy: RetryPolicy, failed_attempt: int) -> float:
    """The wait after attempt ``failed_attempt`` failed: the remote path's (``_retrying``) strategy."""
    wait = tenacity.wait_random_exponential(multiplier=policy.initial_wait, max=policy.max_wait)
    return wait(_Attempted(failed_attempt))  # type: ignore[arg-type]


def _reporter(on_delta: Callable[[Delta], None], attempt: int) -> Callable[[str], None]:
    """Pieces of attempt ``attempt`` to ``on_delta``, whose failure must not fail the call."""

    def report(text: str) -> None:
        try:
            on_delta(Delta(text=text, attempt=attempt))
        except Exception:  # noqa: BLE001 - a watcher's bug is not the model's failure
            log.exception("on_delta failed; the call goes on")

    return report


# Statuses with which a server may refuse ``stream=True`` (saying so); the plain request decides then.
_NO_STREAM_STATUSES = frozenset({400, 404, 405, 415, 422, 501})


def _assemble(chunks: Any, report: Callable[[str], None]) -> Completion:
    """One ``Completion`` from streamed chunks: content and tool-call pieces joined, usage from the end."""
    content: list[str] = []
    calls: dict[int, list[str]] = {}  # index -> [id, name, arguments]
    usage, model, finished, pieces = None, "", False, 0
    for chunk in chunks:
        model = getattr(chunk, "model", None) or model
        usage = getattr(chunk, "usage", None) or usage
        for choice in (chunk.choices or [])[:1]:
            delta = choice.delta
            if delta is not None and delta.content:
                content.append(delta.content)
                pieces += 1
                report(delta.content)
            for part in (delta.tool_calls or []) if delta is not None else []:
                call = calls.setdefault(part.index, ["", "", ""])
                call[0] = part.id or call[0]
                if part.function is not None:
                    call[1] += part.function.name or ""
                    if part.function.arguments:
                        call[2] += part.function.arguments
                        pieces += 1
                        report(part.function.arguments)
            finished = finished or choice.finish_reason is not None
    if not finished:  # the server closed the stream before the answer's end
        raise ValueError("the streamed answer ended before it was complete")
    # A server that streams without usage (llama-cpp-python's) sends a token per chunk;
    # its prompt's size is not known.
    return Completion(
        content="".join(content),
        tool_calls=[(i, n, a) for _, (i, n, a) in sorted(calls.items())],
        prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
        completion_tokens=(getattr(usage, "completion_tokens", 0) or 0) if usage is not None else pieces,
        latency_ms=0.0,
        model=model,
    )


def _completion(response: Any, latency_ms: float) -> Completion:
    if not getattr(response, "choices", None):
        raise ValueError(f"response has no choices: {str(response)[:200]}")
    message = response.choices[0].message
    usage = getattr(response, "usage", None)
    return Completion(
        content=message.content or "",
        tool_calls=[(c.id, c.function.name, c.function.arguments) for c in (message.tool_calls or [])],
        prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
        completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
        latency_ms=latency_ms,
        model=getattr(response, "model", "") or "",
    )
