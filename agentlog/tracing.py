"""Recorded runs as OpenTelemetry traces, sent to an OTLP/HTTP receiver (Jaeger, Tempo, a collector).

Spans follow the OpenTelemetry GenAI semantic conventions: a root ``invoke_agent {pipeline}``
span per run, a ``chat {model}`` span per model call and an ``execute_tool {name}`` span per
tool call, with their start and end times taken from the log (``recorded_at`` of the intent
and of the answer). Message contents are left out unless asked for. Built with the
OpenTelemetry SDK and sent with its OTLP/HTTP exporter; trace and span ids are random.

Reads the store; nothing in ``store`` or ``actors`` imports this module.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode

from agentlog import __version__
from agentlog.events import (
    LLMCallAnswered,
    LLMCallFailed,
    LLMCallRequested,
    RunFailed,
    RunFinished,
    RunForked,
    RunStarted,
    ToolInvoked,
    ToolReturned,
)
from agentlog.models import ModelNameError, parse_model
from agentlog.store import StoredEvent

TRACES_PATH = "/v1/traces"
PROVIDERS = {"openai": "openai", "local": "llama.cpp", "offline": "agentlog.offline"}
_REQUEST_ATTRIBUTES = {"temperature": "gen_ai.request.temperature", "max_tokens": "gen_ai.request.max_tokens",
                       "top_p": "gen_ai.request.top_p", "seed": "gen_ai.request.seed"}


class TraceError(Exception):
    """The spans could not be delivered (the receiver is unreachable or refused them)."""


def traces_endpoint(url: str) -> str:
    """The OTLP/HTTP traces URL for ``url``: a base URL gets ``/v1/traces``, a full one is kept.

    Raises ``ValueError`` (one line) for anything that is not an http(s) URL with a host.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port  # raises on a port that is not a number
    except ValueError:
        raise ValueError(f"--otlp {url!r} is not a URL: expected e.g. http://127.0.0.1:4318") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or (port is not None and not 0 < port < 65536):
        raise ValueError(f"--otlp {url!r} is not an http(s) URL with a host: expected e.g. http://127.0.0.1:4318")
    if parts.path.strip("/"):
        return parts.geturl()
    return parts._replace(path=TRACES_PATH).geturl()


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


@dataclass
class _Call:
    requested: StoredEvent
    answered: StoredEvent | None = None
    failures: list[StoredEvent] = field(default_factory=list)
    copied: bool = False


@dataclass
class _Tool:
    invoked: StoredEvent | None
    returned: StoredEvent | None = None
    copied: bool = False


class _Collect(SpanProcessor):
    """Keeps every ended span, to export them in one request."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


def run_spans(provider: TracerProvider, run_id: str, stored: Sequence[StoredEvent], *,
              with_content: bool = False) -> None:
    """Build the spans of one recorded run with ``provider``'s tracer."""
    if not stored or not isinstance(stored[0].event, RunStarted):
        raise ValueError(f"run {run_id} has no RunStarted event")
    tracer = provider.get_tracer("agentlog", __version__)
    started: RunStarted = stored[0].event
    calls: dict[str, _Call] = {}
    tools: dict[tuple[str, str], _Tool] = {}
    # A fork's events before RunForked are copies of its parent's (recorded when the fork was made):
    # a call or tool is marked copied when its outcome is one of them.
    copied = any(isinstance(s.event, RunForked) for s in stored)
    ended = None
    for s in stored:
        e = s.event
        match e:
            case RunForked():
                copied = False
            case LLMCallRequested():
                calls.setdefault(e.call_id, _Call(s, copied=copied))
            case LLMCallAnswered() if e.call_id in calls:
                calls[e.call_id].answered, calls[e.call_id].copied = s, copied
            case LLMCallFailed() if e.call_id in calls:
                calls[e.call_id].failures.append(s)
            case ToolInvoked():
                tools.setdefault((e.call_id, e.tool_call_id), _Tool(s, copied=copied))
            case ToolReturned():
                tool = tools.setdefault((e.call_id, e.tool_call_id), _Tool(None))
                tool.returned, tool.copied = s, copied
            case RunFinished() | RunFailed():
                ended = s
    last = stored[-1]
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": started.pipeline,
        "gen_ai.conversation.id": run_id, "agentlog.run.id": run_id, "agentlog.run.events": last.seq,
        "agentlog.run.status": "finished" if isinstance(ended and ended.event, RunFinished)
        else "failed" if ended is not None else "unfinished",
    }
    forked = next((s.event for s in stored if isinstance(s.event, RunForked)), None)
    if forked is not None:
        attributes |= {"agentlog.run.parent_id": forked.parent_run_id, "agentlog.run.fork_seq": forked.parent_seq}
    elif started.parent_run_id:
        attributes["agentlog.run.parent_id"] = started.parent_run_id
    if with_content:
        attributes["agentlog.run.task"] = started.task
    root = tracer.start_span(f"invoke_agent {started.pipeline}", kind=SpanKind.INTERNAL, attributes=attributes,
                             start_time=_ns(stored[0].recorded_at))
    if ended is not None and isinstance(ended.event, RunFailed):
        root.set_attribute("error.type", "run_failed")
        root.set_status(Status(StatusCode.ERROR, ended.event.reason[:500]))
    elif ended is not None:
        root.set_attribute("agentlog.run.finish_reason", ended.event.reason)
    parent = trace.set_span_in_context(root)
    for call_id, call in calls.items():
        _chat_span(tracer, parent, run_id, call_id, call, last, with_content)
    for (call_id, tool_call_id), tool in tools.items():
        _tool_span(tracer, parent, run_id, call_id, tool_call_id, tool, last, with_content)
    root.end(end_time=_ns(last.recorded_at))


def _chat_span(tracer: trace.Tracer, parent: Any, run_id: str, call_id: str, call: _Call, last: StoredEvent,
               with_content: bool) -> None:
    requested: LLMCallRequested = call.requested.event
    request = requested.request
    model = str(request.get("model", ""))
    try:
        provider = PROVIDERS.get(parse_model(model).provider, "openai")
    except ModelNameError:
        provider = "openai"
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": provider, "gen_ai.request.model": model,
        "gen_ai.conversation.id": run_id, "gen_ai.agent.name": requested.agent,
        "gen_ai.output.type": "json" if request.get("response_format") else "text",
        "agentlog.call.id": call_id, "agentlog.step": requested.step, "agentlog.attempt": requested.attempt,
        "agentlog.request_hash": requested.request_hash, "agentlog.copied": call.copied,
    }
    for key, name in _REQUEST_ATTRIBUTES.items():
        if isinstance(request.get(key), (int, float)) and not isinstance(request.get(key), bool):
            attributes[name] = request[key]
    if with_content:
        system = [m for m in request.get("messages", []) if m.get("role") == "system"]
        others = [m for m in request.get("messages", []) if m.get("role") != "system"]
        attributes["gen_ai.system_instructions"] = json.dumps(
            [{"type": "text", "content": m.get("content") or ""} for m in system])
        attributes["gen_ai.input.messages"] = json.dumps([_message(m) for m in others])
    answered = call.answered.event if call.answered is not None else None
    if answered is not None:
        attributes |= {
            "gen_ai.response.model": answered.model, "gen_ai.usage.input_tokens": answered.usage.prompt_tokens,
            "gen_ai.usage.output_tokens": answered.usage.completion_tokens,
            "agentlog.reused": answered.reused_from is not None, "agentlog.latency_ms": answered.latency_ms,
        }
        if answered.reused_from is not None:
            ref = answered.reused_from
            attributes["agentlog.reused_from"] = f"{ref.run_id}:{ref.seq}"
        if with_content:
            parts: list[dict[str, Any]] = [{"type": "text", "content": answered.content}] if answered.content else []
            parts += [{"type": "tool_call", "id": t.id, "name": t.name, "arguments": t.arguments}
                      for t in answered.tool_calls]
            attributes["gen_ai.output.messages"] = json.dumps([{
                "role": "assistant", "parts": parts, "finish_reason": "tool_call" if answered.tool_calls else "stop"}])
    gave_up = next((f for f in call.failures if f.event.gave_up), None)
    end = call.answered or gave_up
    if end is None:
        attributes["agentlog.call.unfinished"] = True  # in flight when the log ends (a crash, or still running)
    span = tracer.start_span(f"chat {model}", context=parent, kind=SpanKind.CLIENT, attributes=attributes,
                             start_time=_ns(call.requested.recorded_at))
    for f in call.failures:
        failure: LLMCallFailed = f.event
        span.add_event("agentlog.attempt_failed", {
            "agentlog.attempt": failure.attempt, "error.type": failure.error_kind,
            "agentlog.retryable": failure.retryable, "agentlog.gave_up": failure.gave_up,
        }, timestamp=_ns(f.recorded_at))
    if answered is None and gave_up is not None:
        span.set_attribute("error.type", gave_up.event.error_kind)
        span.set_status(Status(StatusCode.ERROR, gave_up.event.error_kind))
    span.end(end_time=_ns((end or last).recorded_at))


def _message(message: dict[str, Any]) -> dict[str, Any]:
    """A chat message in the conventions' shape: a role and its parts."""
    parts: list[dict[str, Any]] = []
    if message.get("role") == "tool":
        parts.append({"type": "tool_call_response", "id": message.get("tool_call_id"),
                      "result": message.get("content")})
    elif message.get("content"):
        parts.append({"type": "text", "content": message["content"]})
    for t in message.get("tool_calls") or []:
        function = t.get("function", {})
        parts.append({"type": "tool_call", "id": t.get("id"), "name": function.get("name"),
                      "arguments": function.get("arguments")})
    return {"role": message.get("role"), "parts": parts}


def _tool_span(tracer: trace.Tracer, parent: Any, run_id: str, call_id: str, tool_call_id: str, tool: _Tool,
               last: StoredEvent, with_content: bool) -> None:
    first = tool.invoked or tool.returned
    assert first is not None
    invoked, returned = (tool.invoked.event if tool.invoked else None), (tool.returned.event if tool.returned else None)
    name = (invoked or returned).name
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name, "gen_ai.tool.call.id": tool_call_id,
        "gen_ai.tool.type": "function", "gen_ai.conversation.id": run_id, "agentlog.call.id": call_id,
        "agentlog.copied": tool.copied,
    }
    if returned is not None:
        attributes["agentlog.reused"] = returned.reused_from is not None
        if returned.reused_from is not None:
            attributes["agentlog.reused_from"] = f"{returned.reused_from.run_id}:{returned.reused_from.seq}"
    if with_content:
        if invoked is not None:
            attributes["gen_ai.tool.call.arguments"] = invoked.arguments
        if returned is not None:
            attributes["gen_ai.tool.call.result"] = returned.result
    span = tracer.start_span(f"execute_tool {name}", context=parent, kind=SpanKind.INTERNAL, attributes=attributes,
                             start_time=_ns(first.recorded_at))
    if returned is not None and returned.is_error:
        span.set_attribute("error.type", "tool_error")
        span.set_status(Status(StatusCode.ERROR, "the tool reported an error"))
    span.end(end_time=_ns((tool.returned or last).recorded_at))


class _Failures(logging.Handler):
    """What the exporter logs while it fails, turned into one line instead of a log dump."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.status: int | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg.startswith("Failed to export") and len(record.args or ()) >= 2:
            code = record.args[1]
            self.status = code if isinstance(code, int) else self.status


@contextmanager
def _quiet_exporter() -> Iterator[_Failures]:
    logger = logging.getLogger("opentelemetry")
    handler, propagate = _Failures(), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def export_runs(runs: Sequence[tuple[str, Sequence[StoredEvent]]], url: str, *, with_content: bool = False,
                timeout: float = 10.0) -> int:
    """Send the runs' spans to the OTLP/HTTP receiver at ``url`` in one request; return how many.

    Raises ``ValueError`` for a malformed URL or a run without events, ``TraceError`` when the
    receiver cannot be reached or refuses the spans.
    """
    endpoint = traces_endpoint(url)
    collect = _Collect()
    provider = TracerProvider(resource=Resource.create({"service.name": "agentlog",
                                                        "service.version": __version__}))
    provider.add_span_processor(collect)
    for run_id, stored in runs:
        run_spans(provider, run_id, stored, with_content=with_content)
    exporter = OTLPSpanExporter(endpoint=endpoint, timeout=timeout)
    try:
        with _quiet_exporter() as failures:
            result = exporter.export(collect.spans)
    finally:
        exporter.shutdown()
        provider.shutdown()
    if result is not SpanExportResult.SUCCESS:
        why = f"it answered HTTP {failures.status}" if failures.status else "no receiver answered in time"
        raise TraceError(f"could not send {len(collect.spans)} spans to {endpoint}: {why}")
    return len(collect.spans)
