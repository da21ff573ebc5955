"""The HTTP path: the real openai client against a real chat-completions server on 127.0.0.1."""

from __future__ import annotations

import pytest

from agentlog.actors import agent_configs, run
from agentlog.events import LLMCallFailed, LLMCallRequested, OutputRejected
from agentlog.models import CallFailed, Endpoint, Gateway, ModelNotConfigured, RetryPolicy
from agentlog.store import SQLiteStore
from tests.conftest import SECRET
from tests.fake_openai import Fault, FakeOpenAIServer

REQUEST = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Task: x"}], "temperature": 0.1}


def failures(gateway: Gateway, request=REQUEST):
    seen = []
    try:
        result = gateway.complete(request, seen.append)
    except CallFailed as exc:
        return seen, exc
    return seen, result


def test_answer_with_usage_and_the_key_only_in_the_header(gateway, server):
    seen, completion = failures(gateway)
    assert seen == []
    assert completion.content and completion.prompt_tokens > 0 and completion.completion_tokens > 0
    [req] = server.requests
    headers = {k.lower(): v for k, v in req["headers"].items()}
    assert headers["authorization"] == f"Bearer {SECRET}"
    assert req["body"]["model"] == "gpt-4o" and req["body"]["temperature"] == 0.1


@pytest.mark.parametrize("fault,kind", [
    (Fault.status(429), "rate_limit"), (Fault.status(500), "server_error"), (Fault.status(503), "server_error"),
    (Fault.garbage_body(), "bad_response"), (Fault.hang(2.0), "timeout"),
])
def test_transient_failures_are_retried_and_each_attempt_reported(server, fault, kind):
    gateway = Gateway(Endpoint(base_url=server.base_url, api_key=SECRET),
                      retry=RetryPolicy(max_attempts=3, initial_wait=0.01, max_wait=0.02), timeout=0.5)
    server.inject(fault)
    seen, completion = failures(gateway)
    gateway.close()
    assert [(f.attempt, f.error_kind, f.retryable, f.gave_up) for f in seen] == [(1, kind, True, False)]
    assert completion.content
    assert server.count() == 2


def test_client_errors_are_not_retried(gateway, server):
    server.inject(Fault.status(400))
    seen, exc = failures(gateway)
    assert isinstance(exc, CallFailed)
    assert [(f.error_kind, f.retryable, f.gave_up) for f in seen] == [("http_400", False, True)]
    assert server.count() == 1


def test_retries_are_bounded(server):
    gateway = Gateway(Endpoint(base_url=server.base_url, api_key=SECRET),
                      retry=RetryPolicy(max_attempts=3, initial_wait=0.01, max_wait=0.02))
    server.inject(*[Fault.status(429)] * 5)
    seen, exc = failures(gateway)
    gateway.close()
    assert isinstance(exc, CallFailed)
    assert [f.attempt for f in seen] == [1, 2, 3] and seen[-1].gave_up and not seen[0].gave_up
    assert server.count() == 3  # the client's own retries are off: no doubling


def test_backoff_grows_and_is_bounded():
    waits = []
    with FakeOpenAIServer() as server:
        server.inject(*[Fault.status(500)] * 4)
        gateway = Gateway(Endpoint(base_url=server.base_url, api_key=SECRET),
                          retry=RetryPolicy(max_attempts=5, initial_wait=1.0, max_wait=3.0), sleep=waits.append)
        failures(gateway)
        gateway.close()
    assert len(waits) == 4
    assert all(0 <= w <= 3.0 for w in waits)


def test_an_error_message_echoing_the_key_is_redacted(server):
    gateway = Gateway(Endpoint(base_url=server.base_url, api_key=SECRET), retry=RetryPolicy(max_attempts=1))
    server.inject(Fault.status(401, message=f"Incorrect API key provided: {SECRET}"))
    seen, exc = failures(gateway)
    gateway.close()
    assert isinstance(exc, CallFailed)
    assert seen[0].error_kind == "http_401" and "Incorrect API key provided: [redacted]" in seen[0].message
    assert SECRET not in seen[0].message


def test_a_named_model_without_configuration_is_refused_in_one_line():
    gateway = Gateway(Endpoint(base_url=None, api_key=None))
    with pytest.raises(ModelNotConfigured, match="OPENAI_API_KEY"):
        gateway.check("gpt-4o")
    assert gateway.check("offline").provider == "offline"


def test_whole_run_over_http_records_every_attempt_and_never_the_key(tmp_path, server):
    gateway = Gateway(Endpoint(base_url=server.base_url, api_key=SECRET),
                      retry=RetryPolicy(max_attempts=4, initial_wait=0.01, max_wait=0.02), timeout=0.5)
    server.inject(Fault.status(429), Fault.hang(1.0), Fault.content("```json\n{not json"),
                  Fault.garbage_body())
    db = tmp_path / "log.db"
    store = SQLiteStore(db)
    summary = run(store, "Explain how Kubernetes horizontal pod autoscaling works",
                  agents=agent_configs("gpt-4o"), gateway=gateway)
    events = store.events(summary.run_id)
    store.close()
    gateway.close()
    assert summary.status == "finished" and summary.tokens > 0
    kinds = [e.error_kind for e in events if isinstance(e, LLMCallFailed)]
    assert kinds == ["rate_limit", "timeout", "bad_response"]
    assert sum(isinstance(e, OutputRejected) for e in events) == 1
    requested = [e for e in events if isinstance(e, LLMCallRequested)]
    # Every request the server got is in the log, by content.
    logged = {str(e.request["messages"]) for e in requested}
    assert all(str(r["body"]["messages"]) in logged for r in server.requests)
    # Structured output was asked for with the schema generated from the msgspec types.
    research = server.requests[0]["body"]
    assert research["response_format"]["json_schema"]["name"] == "Findings"
    assert research["response_format"]["json_schema"]["schema"]["required"] == [
        "key_areas", "facts", "misconceptions", "sources"]
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert SECRET.encode() not in raw and b"Bearer" not in raw


def test_gateways_of_one_endpoint_share_a_client_until_the_last_closes(server):
    first = Gateway(Endpoint(base_url=server.base_url, api_key=SECRET))
    second = Gateway(Endpoint(base_url=server.base_url, api_key=SECRET))
    other = Gateway(Endpoint(base_url=server.base_url, api_key=SECRET + "-other"))
    spec = first.check("gpt-4o")
    shared, _ = first._client(spec)
    assert second._client(spec)[0] is shared
    assert other._client(spec)[0] is not shared  # another key, another client
    first.close()
    assert not shared.is_closed()
    assert second.complete(REQUEST).content  # still usable by the gateway that holds it
    second.close()
    assert shared.is_closed()
    other.close()
