"""Streaming from the real local model (SmolLM2-135M on llama-cpp-python's server) through the gateway.

Skipped when the local extra is not installed. The only network traffic is to 127.0.0.1.
"""

from __future__ import annotations

import json
import os

import pytest

from agentlog.models import Gateway, local

pytestmark = pytest.mark.skipif(not local.local_available() and not os.environ.get("AGENTLOG_REQUIRE_LOCAL"),
                                reason=f"the local model is not installed: {local.LOCAL_EXTRA_HINT}")

SCHEMA = {"type": "object", "properties": {"summary": {"type": "string", "maxLength": 80}}, "required": ["summary"]}


@pytest.fixture(scope="module")
def gateway():
    g = Gateway()
    yield g
    g.close()


def test_the_local_model_streams_schema_constrained_json(gateway):
    request = {"model": "local", "temperature": 0.0, "max_tokens": 48,
               "messages": [{"role": "system", "content": "Answer with JSON only."},
                            {"role": "user", "content": "Summarise the history of tea."}],
               "response_format": {"type": "json_schema", "json_schema": {"name": "S", "schema": SCHEMA}}}
    deltas = []
    completion = gateway.complete(request, on_delta=deltas.append)
    assert len(deltas) > 3 and "".join(d.text for d in deltas) == completion.content
    assert isinstance(json.loads(completion.content)["summary"], str)  # the grammar holds while streaming
    # llama-cpp-python streams no usage: the answer's tokens are its pieces, the prompt's unknown.
    assert (completion.completion_tokens, completion.prompt_tokens) == (len(deltas), 0)
    assert completion.latency_ms > 0 and completion.model
