"""The event vocabulary as a wire contract: round trips, defaults, upcasting, hashing, payload bounds."""

from __future__ import annotations

import json
import re
import sqlite3
import time

import msgspec
import pytest

from agentlog.events import (
    EVENT_TYPES,
    AgentConfig,
    AgentReconfigured,
    ApprovalDecided,
    ApprovalRequested,
    AreaFacts,
    CallRef,
    CodecError,
    DraftReady,
    Event,
    Findings,
    FindingsReady,
    LLMCallAnswered,
    LLMCallFailed,
    LLMCallRequested,
    OutputRejected,
    ResearchPartReady,
    Review,
    ReviewScored,
    BudgetReached,
    RunFailed,
    RunFinished,
    RunForked,
    RunClaimed,
    RunQueued,
    RunResumed,
    RunStarted,
    SettingsChanged,
    SweepMember,
    SweepSpec,
    SweepVariant,
    ToolCall,
    ToolInvoked,
    ToolReturned,
    ToolSpec,
    Usage,
    apply_reconfiguration,
    decode,
    encode,
    request_hash,
    to_builtins,
)
from agentlog.events.codec import UPCASTERS
from agentlog.store import SQLiteStore

FINDINGS = Findings(
    key_areas=["write-ahead logging", "checkpoints"],
    facts=[
        AreaFacts(area="write-ahead logging", facts=["Readers do not block the writer.", "One writer at a time."]),
        AreaFacts(area="checkpoints", facts=["The WAL is copied back into the database file."]),
    ],
    misconceptions=["WAL makes every write faster."],
    sources=["https://sqlite.org/wal.html"],
)
REVIEW = Review(
    score=7, approved=False, issues=["The checkpoint section is vague."], missed_topics=["busy_timeout"],
    suggestions=["Show PRAGMA wal_checkpoint."], summary="Solid draft; tighten the checkpoint part.",
)
SEARCH_TOOL = ToolSpec(
    name="search_docs", description="Search the SQLite documentation.",
    parameters={"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
)
REQUEST = {
    "model": "openai/gpt-4o-mini",
    "messages": [{"role": "system", "content": "You research."}, {"role": "user", "content": "SQLite WAL"}],
    "temperature": 0.2,
    "response_format": {"type": "json_schema", "json_schema": {"name": "Findings", "schema": {"type": "object"}}},
}

# One realistic instance of every event type, with every optional field set away from its default.
SAMPLES: list[Event] = [
    RunStarted(
        task="Explain SQLite WAL mode", pipeline="content",
        agents={
            "researcher": AgentConfig(model="openai/gpt-4o-mini", temperature=0.2),
            "writer": AgentConfig(model="openai/gpt-4o", temperature=0.6, system_prompt="Write plainly.",
                                  max_tokens=900),
            "reviewer": AgentConfig(model="offline", temperature=0.1),
        },
        max_iterations=3, threshold=8, parent_run_id="0f3c9a", research="parallel",
        tools={"researcher": [SEARCH_TOOL]}, approval="each-review",
    ),
    RunForked(parent_run_id="0f3c9a", parent_seq=12),
    RunResumed(previous_seq=40),
    RunQueued(),
    RunClaimed(worker="host-a:4242", previous_seq=2),
    AgentReconfigured(agent="writer", model="openai/gpt-4o", temperature=0.9, system_prompt="Be brief.",
                      max_tokens=400),
    SettingsChanged(max_iterations=5, threshold=9, approval="final", budget_usd=0.5, budget_tokens=20000, sample=2),
    BudgetReached(budget="usd", limit=0.5, spent=0.5012, call_id="review-2/1", scope="sweep"),
    SweepMember(sweep_id="5be1c0ffee12", variant="reviewer=gpt-4o", sample=2, parent_run_id="0f3c9a",
                spec=SweepSpec(runs=["0f3c9a"], at="review-1", samples=2, variants=[
                    SweepVariant(label="reviewer=gpt-4o", models={"reviewer": "gpt-4o"}),
                    SweepVariant(label="writer=0.8", temperatures={"writer": 0.8}, threshold=7)])),
    RunFinished(reason="approved", iterations=2, score=9),
    RunFailed(reason="rate limited for 10 minutes", step="draft", retryable=True),
    LLMCallRequested(call_id="research/1", agent="researcher", step="research", attempt=1, request=REQUEST,
                     request_hash=request_hash(REQUEST), round=2),
    LLMCallAnswered(
        call_id="research/1", agent="researcher", request_hash=request_hash(REQUEST), content='{"key_areas": []}',
        tool_calls=[ToolCall(id="call_1", name="search_docs", arguments='{"query": "wal"}')],
        usage=Usage(prompt_tokens=120, completion_tokens=80, total_tokens=200), latency_ms=812.5,
        model="gpt-4o-mini-2024-07-18", reused_from=CallRef(run_id="0f3c9a", seq=4, call_id="research/1"),
    ),
    LLMCallFailed(call_id="draft/1", agent="writer", attempt=3, error_kind="RateLimitError",
                  message="429 Too Many Requests", retryable=True, gave_up=True),
    OutputRejected(call_id="review/1", agent="reviewer", step="review", reason="score: Expected `int <= 10`, got `11`"),
    ToolInvoked(call_id="research/1", tool_call_id="call_1", name="search_docs", arguments='{"query": "wal"}'),
    ToolReturned(call_id="research/1", tool_call_id="call_1", name="search_docs", result="WAL: readers...",
                 is_error=True, reused_from=CallRef(run_id="0f3c9a", seq=5, call_id="research/1")),
    ResearchPartReady(part="counter", findings=FINDINGS, call_id="research-counter/1"),
    FindingsReady(findings=FINDINGS, call_id="research/1"),
    DraftReady(iteration=2, draft="# SQLite WAL\n\nReaders never block the writer.", call_id="draft/2",
               source=CallRef(run_id="0f3c9a", seq=20, call_id="draft/2")),
    ReviewScored(iteration=2, review=REVIEW, call_id="review/2"),
    ApprovalRequested(iteration=2, point="final"),
    ApprovalDecided(iteration=2, decision="edit", by="ada", note="tightened", draft="# SQLite WAL\n\nShorter."),
]


def _id(event: Event) -> str:
    return type(event).__name__


def test_every_event_type_has_a_sample():
    assert sorted(_id(e) for e in SAMPLES) == sorted(EVENT_TYPES)


@pytest.mark.parametrize("event", SAMPLES, ids=_id)
def test_round_trip(event: Event):
    type_name, version, data = encode(event)
    assert (type_name, version) == (type(event).__name__, type(event).VERSION)
    back = decode(type_name, version, data)
    assert type(back) is type(event)
    assert back == event
    # Decoding accepts the text the store keeps as well as the bytes.
    assert decode(type_name, version, data.decode()) == event


@pytest.mark.parametrize("event", SAMPLES, ids=_id)
def test_the_tag_is_the_class_name(event: Event):
    _, _, data = encode(event)
    assert json.loads(data)["type"] == type(event).__name__
    assert to_builtins(event)["type"] == type(event).__name__


@pytest.mark.parametrize("event", SAMPLES, ids=_id)
def test_events_are_frozen(event: Event):
    if not event.__struct_fields__:  # a marker (RunQueued): nothing to change, nothing can be added
        with pytest.raises(AttributeError):
            event.note = ""  # type: ignore[attr-defined]
        return
    field = event.__struct_fields__[0]
    with pytest.raises(AttributeError):
        setattr(event, field, getattr(event, field))


def test_values_inside_events_are_frozen():
    with pytest.raises(AttributeError):
        FINDINGS.key_areas = []  # type: ignore[misc]
    with pytest.raises(AttributeError):
        REVIEW.score = 10  # type: ignore[misc]
    with pytest.raises(AttributeError):
        Usage().total_tokens = 1  # type: ignore[misc]


def test_every_version_bump_has_its_upcasters():
    missing = [(name, v) for name, cls in EVENT_TYPES.items() for v in range(1, cls.VERSION)
               if (name, v) not in UPCASTERS]
    assert missing == []
    assert EVENT_TYPES["RunStarted"].VERSION == 2


# --- defaults ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "omitted"),
    [
        (RunFailed(reason="boom"), {"step", "retryable"}),
        (RunFinished(reason="max_iterations", iterations=3), {"score"}),
        (AgentReconfigured(agent="writer"), {"model", "temperature", "system_prompt", "max_tokens"}),
        (LLMCallAnswered(call_id="c", agent="writer", request_hash="h", content="x"),
         {"tool_calls", "usage", "latency_ms", "model", "reused_from"}),
        (DraftReady(iteration=1, draft="d", call_id="draft/1"), {"source"}),
        (ToolReturned(call_id="c", tool_call_id="t", name="n", result="r"), {"is_error", "reused_from"}),
    ],
    ids=lambda v: _id(v) if isinstance(v, Event) else "",
)
def test_defaults_are_omitted_and_decode_back(event: Event, omitted: set[str]):
    type_name, version, data = encode(event)
    written = json.loads(data)
    assert omitted.isdisjoint(written), f"defaults were written: {sorted(omitted & set(written))}"
    back = decode(type_name, version, data)
    assert back == event
    for field in msgspec.structs.fields(type(event)):
        if field.name in omitted:
            default = field.default_factory() if field.default is msgspec.NODEFAULT else field.default
            assert getattr(back, field.name) == default


def test_fields_added_later_read_from_old_data_as_their_defaults():
    # Written before ``round``, ``research`` and ``tools`` existed: no upcaster is needed.
    requested = decode("LLMCallRequested", 1, json.dumps({
        "type": "LLMCallRequested", "call_id": "draft/1", "agent": "writer", "step": "draft", "attempt": 1,
        "request": {"model": "offline"}, "request_hash": "ab",
    }))
    assert requested.round == 0
    started = decode("RunStarted", 2, json.dumps({
        "type": "RunStarted", "task": "t", "pipeline": "content", "max_iterations": 3, "threshold": 8,
        "agents": {"writer": {"model": "offline", "temperature": 0.6}},
    }))
    assert (started.research, started.tools, started.parent_run_id) == ("single", {}, None)
    assert started.agents["writer"] == AgentConfig(model="offline", temperature=0.6)


# --- upcasting ---------------------------------------------------------------------------

V1_RUN_STARTED = {
    "type": "RunStarted", "task": "Explain SQLite WAL mode", "pipeline": "content",
    "model": "openai/gpt-4o-mini", "max_iterations": 3, "threshold": 8,
}


def test_v1_run_started_in_a_real_log_reads_as_the_current_version(tmp_path):
    path = tmp_path / "log.db"
    SQLiteStore(path).close()
    raw = sqlite3.connect(path)
    with raw:
        raw.execute("INSERT INTO events (run_id, seq, type, version, recorded_at, data) VALUES (?, 1, ?, 1, ?, ?)",
                    ("old-run", "RunStarted", time.time(), json.dumps(V1_RUN_STARTED)))
    raw.close()

    with SQLiteStore(path) as store:
        [stored] = store.read("old-run")
    assert (stored.seq, stored.type, stored.version) == (1, "RunStarted", 1)
    started = stored.event
    assert type(started) is RunStarted
    assert started.agents == {
        "researcher": AgentConfig(model="openai/gpt-4o-mini", temperature=0.2),
        "writer": AgentConfig(model="openai/gpt-4o-mini", temperature=0.6),
        "reviewer": AgentConfig(model="openai/gpt-4o-mini", temperature=0.1),
    }
    assert (started.task, started.pipeline, started.max_iterations, started.threshold) == (
        "Explain SQLite WAL mode", "content", 3, 8)
    assert not hasattr(started, "model")

    # Upcast on read, never rewrite the log: the row is still version 1 with its one model.
    raw = sqlite3.connect(path)
    version, data = raw.execute("SELECT version, data FROM events WHERE run_id = 'old-run'").fetchone()
    raw.close()
    assert version == 1
    assert json.loads(data) == V1_RUN_STARTED


def test_reconfiguration_sets_what_it_names_and_keeps_the_rest():
    config = AgentConfig(model="a", temperature=0.2, system_prompt="be brief", max_tokens=100)
    assert apply_reconfiguration(config, AgentReconfigured(agent="writer", temperature=0.9)) == AgentConfig(
        model="a", temperature=0.9, system_prompt="be brief", max_tokens=100)
    assert apply_reconfiguration(config, AgentReconfigured(agent="writer")) == config
    assert apply_reconfiguration(config, AgentReconfigured(agent="w", model="b", max_tokens=5)) == AgentConfig(
        model="b", temperature=0.2, system_prompt="be brief", max_tokens=5)


def test_unknown_type_is_a_codec_error():
    with pytest.raises(CodecError, match=r"unknown event type 'RunTeleported'.*newer agentlog"):
        decode("RunTeleported", 1, b'{"type": "RunTeleported"}')


def test_newer_version_is_a_codec_error_that_says_to_upgrade():
    type_name, _, data = encode(SAMPLES[0])
    with pytest.raises(CodecError, match=r"RunStarted v3 is newer than this agentlog understands \(v2\); upgrade"):
        decode(type_name, 3, data)


def test_unknown_type_in_a_real_log_fails_the_read(tmp_path):
    path = tmp_path / "log.db"
    with SQLiteStore(path) as store:
        store.append("r", [RunResumed(previous_seq=0)], 0)
    raw = sqlite3.connect(path)
    with raw:
        raw.execute("INSERT INTO events (run_id, seq, type, version, recorded_at, data) "
                    "VALUES ('r', 2, 'RunTeleported', 1, 0, '{\"type\":\"RunTeleported\"}')")
    raw.close()
    with SQLiteStore(path) as store:
        assert [s.seq for s in store.read("r", upto=1)] == [1]
        with pytest.raises(CodecError, match="RunTeleported"):
            store.read("r")


@pytest.mark.parametrize(
    ("type_name", "data"),
    [
        ("RunFinished", b'{"type": "RunFinished", "reason": "bored", "iterations": 1}'),  # not a reason
        ("RunFinished", b'{"type": "RunFinished", "reason": "approved"}'),  # iterations missing
        ("RunFailed", encode(RunFinished(reason="approved", iterations=1))[2]),  # another type's bytes
        ("ReviewScored", json.dumps({"type": "ReviewScored", "iteration": 1, "call_id": "r",
                                     "review": msgspec.to_builtins(REVIEW) | {"score": 11}}).encode()),
        ("RunFinished", b'{"type": "RunFinished", "reason": "appr'),  # truncated write
    ],
    ids=["bad-literal", "missing-field", "wrong-type", "payload-out-of-bounds", "malformed-json"],
)
def test_invalid_stored_data_is_a_codec_error(type_name: str, data: bytes):
    with pytest.raises(CodecError, match=f"^{type_name} v1: "):
        decode(type_name, 1, data)


@pytest.mark.parametrize("data", [b'{"type": "RunStarted", "task": "t"}', b'{"type": "RunSt'],
                         ids=["v1-without-model", "v1-malformed"])
def test_invalid_old_version_data_is_a_codec_error(data: bytes):
    with pytest.raises(CodecError):
        decode("RunStarted", 1, data)


# --- request hash ------------------------------------------------------------------------


def _reordered(value):
    """The same JSON value with every object's keys in reverse order."""
    if isinstance(value, dict):
        return {k: _reordered(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reordered(v) for v in value]
    return value


def test_request_hash_is_stable_under_key_order():
    reordered = _reordered(REQUEST)
    assert list(reordered) != list(REQUEST)
    assert list(reordered["response_format"]) != list(REQUEST["response_format"])
    assert request_hash(reordered) == request_hash(REQUEST)
    assert request_hash(json.loads(json.dumps(REQUEST))) == request_hash(REQUEST)


def test_request_hash_is_a_sha256_hex_digest():
    digest = request_hash(REQUEST)
    assert len(digest) == 64 and int(digest, 16) >= 0


@pytest.mark.parametrize(
    "change",
    [
        {"model": "openai/gpt-4o"},
        {"messages": [*REQUEST["messages"][:1], {"role": "user", "content": "SQLite WAL mode"}]},
        {"messages": list(reversed(REQUEST["messages"]))},
        {"messages": REQUEST["messages"][:1]},
        {"temperature": 0.3},
        {"response_format": {"type": "json_schema", "json_schema": {"name": "Review", "schema": {"type": "object"}}}},
        {"tools": [{"type": "function", "function": msgspec.to_builtins(SEARCH_TOOL)}]},
    ],
    ids=["model", "message-content", "message-order", "message-count", "temperature", "response_format", "tools"],
)
def test_request_hash_changes_with_what_determines_the_completion(change: dict):
    changed = REQUEST | change
    assert changed != REQUEST
    assert request_hash(changed) != request_hash(REQUEST)


def test_request_hash_changes_when_a_field_is_dropped():
    without = {k: v for k, v in REQUEST.items() if k != "response_format"}
    assert request_hash(without) != request_hash(REQUEST)


# --- payload bounds ----------------------------------------------------------------------


def _review(**changes) -> dict:
    return msgspec.to_builtins(REVIEW) | changes


def _findings(**changes) -> dict:
    return msgspec.to_builtins(FINDINGS) | changes


@pytest.mark.parametrize("score", [1, 10])
def test_review_score_bounds_are_inclusive(score: int):
    assert msgspec.json.decode(json.dumps(_review(score=score)), type=Review).score == score


@pytest.mark.parametrize(
    ("data", "where"),
    [
        (_review(score=0), "$.score"),
        (_review(score=11), "$.score"),
        (_review(score="7"), "$.score"),
        (_review(score=7.5), "$.score"),
        (_review(approved="yes"), "$.approved"),
        (_review(issues=["x"] * 9), "$.issues"),
        (_review(issues=[""]), "$.issues[0]"),
        (_review(suggestions=["x" * 301]), "$.suggestions[0]"),
        (_review(summary="x" * 1001), "$.summary"),
        (_review(verdict="great"), "verdict"),
        ({k: v for k, v in _review().items() if k != "summary"}, "summary"),
    ],
    ids=["score-0", "score-11", "score-str", "score-float", "approved-str", "nine-issues", "empty-issue",
         "long-suggestion", "long-summary", "unknown-field", "missing-summary"],
)
def test_review_rejects_bad_data(data: dict, where: str):
    with pytest.raises(msgspec.ValidationError, match=re.escape(where)):
        msgspec.json.decode(json.dumps(data), type=Review)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(data, Review)


def test_findings_at_its_bounds_is_accepted():
    line = "x" * 300
    data = _findings(key_areas=[line] * 8, facts=[{"area": line, "facts": [line] * 8}] * 8,
                     misconceptions=[], sources=[line] * 8)
    findings = msgspec.json.decode(json.dumps(data), type=Findings)
    assert len(findings.key_areas) == 8 and len(findings.facts[7].facts) == 8


@pytest.mark.parametrize(
    ("data", "where"),
    [
        (_findings(key_areas=[]), "$.key_areas"),
        (_findings(key_areas=["a"] * 9), "$.key_areas"),
        (_findings(key_areas=["x" * 301]), "$.key_areas[0]"),
        (_findings(facts=[{"area": "a", "facts": []}] * 9), "$.facts"),
        (_findings(facts=[{"area": "", "facts": []}]), "$.facts[0].area"),
        (_findings(facts=[{"area": "a", "facts": ["f"] * 9}]), "$.facts[0].facts"),
        (_findings(facts=[{"area": "a", "facts": [], "source": "s"}]), "source"),
        (_findings(sources=["s"] * 9), "$.sources"),
        (_findings(misconceptions="one big string"), "$.misconceptions"),
        ({k: v for k, v in _findings().items() if k != "sources"}, "sources"),
    ],
    ids=["no-key-areas", "nine-key-areas", "long-key-area", "nine-facts", "empty-area", "nine-area-facts",
         "unknown-nested-field", "nine-sources", "string-not-list", "missing-sources"],
)
def test_findings_rejects_bad_data(data: dict, where: str):
    with pytest.raises(msgspec.ValidationError, match=re.escape(where)):
        msgspec.json.decode(json.dumps(data), type=Findings)


def test_an_event_carrying_invalid_findings_does_not_decode():
    data = json.dumps({"type": "FindingsReady", "call_id": "research/1", "findings": _findings(key_areas=[])})
    with pytest.raises(CodecError, match=r"FindingsReady v1: .*\$\.findings\.key_areas"):
        decode("FindingsReady", 1, data)
