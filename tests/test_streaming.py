"""Streamed answers: the real openai client against the fake server's streaming modes."""

from __future__ import annotations

import pytest

from agentlog.models import CallFailed, Delta, Endpoint, Gateway, RetryPolicy
from tests.conftest import SECRET
from tests.fake_openai import Fault, FakeOpenAIServer

REQUEST = {"model": "gpt-4o", "messages": [{"role": "system", "content": "You are the writer."},
                                           {"role": "user", "content": "Task: tides"}], "temperature": 0.6}
TOOL_ANSWER = {"content": "", "prompt_tokens": 7, "completion_tokens": 3,
               "tool_calls": [{"id": "call_1", "type": "function",
                               "function": {"name": "search_documents", "arguments": '{"query": "tides and moon"}'}},
                              {"id": "call_2", "type": "function",
                               "function": {"name": "search_documents", "arguments": '{"query": "spring tides"}'}}]}


def make_gateway(server: FakeOpenAIServer, attempts: int = 3) -> Gateway:
    return Gateway(Endpoint(base_url=server.base_url, api_key=SECRET),
                   retry=RetryPolicy(max_attempts=attempts, initial_wait=0.01, max_wait=0.02), timeout=5.0)


def complete(gateway: Gateway, request: dict = REQUEST):
    deltas: list[Delta] = []
    failures: list = []
    completion = gateway.complete(request, failures.append, on_delta=deltas.append)
    return completion, deltas, failures


def plain(server: FakeOpenAIServer, request: dict = REQUEST):
    gateway = make_gateway(server)
    try:
        return gateway.complete(request)
    finally:
        gateway.close()


def test_a_streamed_answer_is_the_same_completion_with_usage_from_the_last_chunk():
    with FakeOpenAIServer() as server:
        gateway = make_gateway(server)
        completion, deltas, failures = complete(gateway)
        unstreamed = plain(server)
        gateway.close()
        first, second = (r["body"] for r in server.requests)
    assert failures == []
    assert first["stream"] is True and first["stream_options"] == {"include_usage": True}
    assert "stream" not in second
    assert len(deltas) > 5 and all(d.attempt == 1 for d in deltas)
    assert "".join(d.text for d in deltas) == completion.content
    assert (completion.content, completion.tool_calls, completion.prompt_tokens, completion.completion_tokens,
            completion.model) == (unstreamed.content, unstreamed.tool_calls, unstreamed.prompt_tokens,
                                  unstreamed.completion_tokens, unstreamed.model)
    assert completion.prompt_tokens > 0 and completion.completion_tokens > 0 and completion.latency_ms > 0


def test_streamed_tool_calls_are_assembled_by_index():
    with FakeOpenAIServer(responder=lambda body: TOOL_ANSWER) as server:
        gateway = make_gateway(server)
        completion, deltas, _ = complete(gateway)
        gateway.close()
    assert completion.tool_calls == [("call_1", "search_documents", '{"query": "tides and moon"}'),
                                     ("call_2", "search_documents", '{"query": "spring tides"}')]
    assert (completion.prompt_tokens, completion.completion_tokens) == (7, 3)
    assert "".join(d.text for d in deltas) == '{"query": "tides and moon"}{"query": "spring tides"}'


def test_a_server_answering_a_stream_request_with_one_json_body_is_used_as_is_then_asked_plainly():
    with FakeOpenAIServer(streaming="json") as server:
        gateway = make_gateway(server)
        completion, deltas, failures = complete(gateway)
        again, _, _ = complete(gateway)
        gateway.close()
        bodies = [r["body"] for r in server.requests]
    assert failures == [] and deltas == []
    assert completion.content and completion.content == again.content and completion.prompt_tokens > 0
    assert [b.get("stream") for b in bodies] == [True, None]  # one request per call, no more streaming


def test_a_server_refusing_stream_gets_the_plain_request_and_is_not_asked_to_stream_again():
    with FakeOpenAIServer(streaming="reject") as server:
        gateway = make_gateway(server)
        completion, deltas, failures = complete(gateway)
        again, _, _ = complete(gateway)
        gateway.close()
        bodies = [r["body"] for r in server.requests]
    assert failures == [] and deltas == [] and completion.content == again.content
    assert [b.get("stream") for b in bodies] == [True, None, None]


def test_a_stream_cut_mid_answer_is_a_retryable_failure_and_the_call_is_made_again():
    with FakeOpenAIServer() as server:
        server.inject(Fault.drop_stream(after_chunks=4))
        gateway = make_gateway(server)
        completion, deltas, failures = complete(gateway)
        gateway.close()
        assert server.count() == 2
    [failure] = failures
    assert (failure.attempt, failure.retryable, failure.gave_up) == (1, True, False)
    assert failure.error_kind in ("connection", "bad_response")
    first = [d.text for d in deltas if d.attempt == 1]
    second = [d.text for d in deltas if d.attempt == 2]
    assert 0 < len(first) < len(second)  # the cut attempt's pieces are marked, the answer starts again
    assert "".join(second) == completion.content


def test_a_stream_cut_on_every_attempt_gives_up_after_the_retry_policy():
    with FakeOpenAIServer() as server:
        server.inject(*[Fault.drop_stream(after_chunks=2)] * 3)
        gateway = make_gateway(server, attempts=3)
        with pytest.raises(CallFailed):
            complete(gateway)
        gateway.close()
        assert server.count() == 3


def test_a_stream_that_is_not_server_sent_events_is_a_retryable_bad_response():
    with FakeOpenAIServer() as server:
        server.inject(Fault.garbage_body())
        gateway = make_gateway(server)
        completion, _, failures = complete(gateway)
        gateway.close()
    assert [(f.error_kind, f.retryable) for f in failures] == [("bad_response", True)]
    assert completion.content


def test_a_failing_on_delta_does_not_fail_or_repeat_the_call(caplog):
    def broken(delta: Delta) -> None:
        raise RuntimeError("watcher bug")

    with FakeOpenAIServer() as server:
        gateway = make_gateway(server)
        failures: list = []
        completion = gateway.complete(REQUEST, failures.append, on_delta=broken)
        gateway.close()
        assert server.count() == 1
    assert completion.content and failures == []
    assert "on_delta failed" in caplog.text


def test_a_client_error_that_is_not_about_streaming_is_the_calls_own_failure():
    with FakeOpenAIServer(down={"gpt-4o": 404}) as server:
        gateway = make_gateway(server)
        with pytest.raises(CallFailed) as failed:
            complete(gateway)
        gateway.close()
        assert server.count() == 1  # not asked again without streaming
    assert failed.value.failure.error_kind == "http_404"
