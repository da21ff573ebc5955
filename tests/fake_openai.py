"""A real HTTP server on 127.0.0.1 that speaks the chat-completions protocol.

By default it answers like the offline model (schema-valid findings and reviews, Markdown
drafts), so whole pipelines run against it through the real ``openai`` client. Faults
can be queued: HTTP statuses (429, 500, ...), a hang longer than the client's timeout, a
body that is not JSON, a reply whose content is not valid JSON, or a stream cut off after
some chunks; a model can be declared down (every request for it gets one status). Every
request is recorded with its headers, so tests can count calls and check what was sent.

A request with ``stream=True`` is answered as OpenAI does: server-sent events, one chunk
per word, usage in a last chunk when ``stream_options.include_usage`` asks for it. Other
servers are imitated by ``streaming="json"`` (a plain JSON body whatever was asked) and
``streaming="reject"`` (HTTP 400 to any stream request).
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from agentlog.models import offline


class Fault:
    """One scripted misbehaviour, used for the next matching request."""

    def __init__(self, kind: str, value: Any = None, *, when: Callable[[dict], bool] | None = None,
                 message: str | None = None):
        self.kind, self.value, self.when, self.message = kind, value, when, message

    @classmethod
    def status(cls, code: int, *, message: str | None = None, **kw: Any) -> "Fault":
        return cls("status", code, message=message, **kw)

    @classmethod
    def hang(cls, seconds: float, **kw: Any) -> "Fault":
        return cls("hang", seconds, **kw)

    @classmethod
    def garbage_body(cls, **kw: Any) -> "Fault":
        return cls("garbage", None, **kw)

    @classmethod
    def content(cls, text: str, **kw: Any) -> "Fault":
        return cls("content", text, **kw)

    @classmethod
    def drop_stream(cls, after_chunks: int, **kw: Any) -> "Fault":
        """A streamed answer whose connection is closed after ``after_chunks`` chunks."""
        return cls("drop", after_chunks, **kw)


class _HTTPServer(ThreadingHTTPServer):
    # A burst of new connections (a worker starting 50 runs at once) must wait to be accepted,
    # not be dropped: past socketserver's default backlog of 5 the kernel drops a connection's
    # SYN, and the client tries again only after a second. Model servers listen with a long
    # backlog (uvicorn's default is 2048).
    request_queue_size = 1024


class FakeOpenAIServer:
    def __init__(self, *, delay: float = 0.0, responder: Callable[[dict], dict] | None = None,
                 down: dict[str, int] | None = None, streaming: str = "sse", chunk_delay: float = 0.0,
                 whole_streams: bool = False):
        if streaming not in ("sse", "json", "reject"):
            raise ValueError(f"streaming is 'sse', 'json' or 'reject', not {streaming!r}")
        self.delay = delay
        self.responder = responder
        self.down = dict(down or {})  # model name -> the HTTP status every request for it gets
        self.streaming, self.chunk_delay = streaming, chunk_delay
        # For benchmarks: an answer sent in one write, a streamed one's chunks too (the same
        # bytes, one write instead of one per word), unless a fault cuts it or chunks are paced.
        self.whole_streams = whole_streams
        self.chunks_sent = 0  # streamed chunks written, over all requests
        self.chunk_sent = threading.Condition()
        self.requests: list[dict[str, Any]] = []
        self.faults: deque[Fault] = deque()
        self._lock = threading.Lock()
        self._httpd = _HTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> "FakeOpenAIServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> "FakeOpenAIServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def inject(self, *faults: Fault) -> None:
        with self._lock:
            self.faults.extend(faults)

    def count(self, agent_marker: str | None = None) -> int:
        """Requests received, optionally only those whose system prompt contains ``agent_marker``."""
        with self._lock:
            if agent_marker is None:
                return len(self.requests)
            return sum(agent_marker in r["body"]["messages"][0]["content"] for r in self.requests)

    def count_model(self, model: str) -> int:
        """Requests received for ``model``."""
        with self._lock:
            return sum(r["body"].get("model") == model for r in self.requests)

    def _next_fault(self, body: dict) -> Fault | None:
        if body.get("model") in self.down:
            return Fault.status(self.down[body["model"]], message=f"model {body['model']} is down")
        with self._lock:
            for fault in list(self.faults):
                if fault.when is None or fault.when(body):
                    self.faults.remove(fault)
                    return fault
        return None

    def _answer(self, body: dict) -> dict:
        if self.responder is not None:
            return self.responder(body)
        completion = offline.complete(body)
        answer: dict[str, Any] = {"content": completion.content, "prompt_tokens": completion.prompt_tokens,
                                  "completion_tokens": completion.completion_tokens}
        if completion.tool_calls:
            answer["tool_calls"] = [{"id": i, "type": "function", "function": {"name": n, "arguments": a}}
                                    for i, n, a in completion.tool_calls]
        return answer

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes: without this, each answer waits
            # ~40 ms for the client's delayed ACK.
            disable_nagle_algorithm = True
            # Whole streams: the headers and the body leave in one write too (sent as the
            # request ends, or at an explicit flush).
            wbufsize = 1 << 16 if server.whole_streams else 0

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, payload: bytes, content_type: str = "application/json") -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, json.dumps({"object": "list", "data": [{"id": "fake", "object": "model"}]}).encode())
                else:
                    self._send(404, b'{"error": {"message": "not found"}}')

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    server.requests.append({"body": body, "headers": dict(self.headers), "at": time.monotonic()})
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, b'{"error": {"message": "not found"}}')
                    return
                fault = server._next_fault(body)
                if server.delay:
                    time.sleep(server.delay)
                if fault is not None and fault.kind == "status":
                    text = fault.message or f"injected {fault.value}"
                    message = {"error": {"message": text, "type": "injected", "code": None}}
                    self._send(fault.value, json.dumps(message).encode())
                    return
                if fault is not None and fault.kind == "hang":
                    time.sleep(fault.value)
                    try:
                        self._send(500, b'{"error": {"message": "too late"}}')
                    except OSError:
                        pass
                    return
                if fault is not None and fault.kind == "garbage":
                    self._send(200, b"<html>this is not json</html>", "text/html")
                    return
                if body.get("stream") and server.streaming == "reject":
                    self._send(400, b'{"error": {"message": "streaming is not supported", "type": "invalid"}}')
                    return
                answer = server._answer(body)
                if fault is not None and fault.kind == "content":
                    answer = {**answer, "content": fault.value}
                if body.get("stream") and server.streaming == "sse":
                    self._stream(body, answer, fault.value if fault is not None and fault.kind == "drop" else None)
                    return
                prompt, completion = answer.get("prompt_tokens", 10), answer.get("completion_tokens", 10)
                message: dict[str, Any] = {"role": "assistant", "content": answer.get("content")}
                if answer.get("tool_calls"):
                    message["tool_calls"] = answer["tool_calls"]
                payload = {
                    "id": f"chatcmpl-{len(server.requests)}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body.get("model", "fake"),
                    "choices": [{"index": 0, "message": message,
                                 "finish_reason": "tool_calls" if answer.get("tool_calls") else "stop"}],
                    "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                              "total_tokens": prompt + completion},
                }
                self._send(200, json.dumps(payload).encode())

            def _stream(self, body: dict, answer: dict, drop_after: int | None) -> None:
                """The answer as OpenAI streams it; ``drop_after`` chunks, then the connection is cut."""
                base = {"id": f"chatcmpl-{len(server.requests)}", "object": "chat.completion.chunk",
                        "created": int(time.time()), "model": body.get("model", "fake")}

                def chunk(delta: dict, finish: str | None = None) -> dict:
                    return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

                chunks = [chunk({"role": "assistant", "content": ""})]
                chunks += [chunk({"content": w}) for w in re.findall(r"\s*\S+\s*", answer.get("content") or "")]
                for i, call in enumerate(answer.get("tool_calls") or []):
                    arguments = call["function"]["arguments"]
                    half = len(arguments) // 2
                    chunks.append(chunk({"tool_calls": [{"index": i, "id": call["id"], "type": "function",
                                                         "function": {"name": call["function"]["name"],
                                                                      "arguments": arguments[:half]}}]}))
                    chunks.append(chunk({"tool_calls": [{"index": i, "function": {"arguments": arguments[half:]}}]}))
                chunks.append(chunk({}, "tool_calls" if answer.get("tool_calls") else "stop"))
                if (body.get("stream_options") or {}).get("include_usage"):
                    prompt, completion = answer.get("prompt_tokens", 10), answer.get("completion_tokens", 10)
                    chunks.append({**base, "choices": [], "usage": {
                        "prompt_tokens": prompt, "completion_tokens": completion,
                        "total_tokens": prompt + completion}})
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                if server.whole_streams and drop_after is None and not server.chunk_delay:
                    frames = [f"data: {json.dumps(c)}\n\n".encode() for c in chunks] + [b"data: [DONE]\n\n", b""]
                    try:
                        self.wfile.write(b"".join(b"%x\r\n%s\r\n" % (len(f), f) for f in frames))
                        self.wfile.flush()
                    except OSError:
                        self.close_connection = True
                        return
                    with server.chunk_sent:
                        server.chunks_sent += len(chunks)
                        server.chunk_sent.notify_all()
                    return
                try:
                    for n, c in enumerate(chunks):
                        if drop_after is not None and n >= drop_after:
                            # Cut mid-body: no terminating chunk, so the client sees a broken stream.
                            self.close_connection = True
                            self.wfile.flush()
                            self.connection.shutdown(socket.SHUT_RDWR)
                            return
                        self._chunk(f"data: {json.dumps(c)}\n\n".encode())
                        with server.chunk_sent:
                            server.chunks_sent += 1
                            server.chunk_sent.notify_all()
                        if server.chunk_delay:
                            time.sleep(server.chunk_delay)
                    self._chunk(b"data: [DONE]\n\n")
                    self._chunk(b"")
                except OSError:  # the client went away (a test killed it): nothing to answer
                    self.close_connection = True

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

        return Handler

    def wait_chunks(self, n: int, timeout: float = 10.0) -> bool:
        """Wait until ``n`` streamed chunks have been written in all (False on timeout)."""
        with self.chunk_sent:
            return self.chunk_sent.wait_for(lambda: self.chunks_sent >= n, timeout)


def main() -> None:
    """Run the server standalone: ``python -m tests.fake_openai [--delay S] [--port-file F]``."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--port-file")
    parser.add_argument("--streaming", choices=["sse", "json", "reject"], default="sse")
    parser.add_argument("--chunk-delay", type=float, default=0.0)
    parser.add_argument("--whole-streams", action="store_true", help="write a streamed answer in one piece")
    args = parser.parse_args()
    server = FakeOpenAIServer(delay=args.delay, streaming=args.streaming, chunk_delay=args.chunk_delay,
                              whole_streams=args.whole_streams).start()
    if args.port_file:
        with open(args.port_file, "w") as fh:
            fh.write(server.base_url)
    print(server.base_url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
