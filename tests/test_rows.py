"""The row format of schema 9: the event's MessagePack array, its large values spliced in from
the packs, decoded straight into the event's own type; its field order pinned and only ever
extended; a schema-8 log (packed rows) upgraded in place with the same folded views."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import msgspec
import pytest

from agentlog.events import (
    EVENT_TYPES,
    AgentConfig,
    AreaFacts,
    CallRef,
    DraftReady,
    Findings,
    FindingsReady,
    LLMCallAnswered,
    LLMCallRequested,
    Review,
    ReviewScored,
    RunFinished,
    RunForked,
    RunStarted,
    SweepMember,
    SweepSpec,
    SweepVariant,
    ToolCall,
    ToolReturned,
    ToolSpec,
    Usage,
    decode,
    encode,
    pack,
    to_builtins,
)
from agentlog.events import codec, rows
from agentlog.replay import build_view, verify
from agentlog.store import SCHEMA_VERSION, SQLiteStore
from tests.test_lean_log import folded_read_only

GOLDEN = Path(__file__).parent / "golden"
PINNED = json.loads((Path(__file__).parent / "golden_schema" / "row-fields.json").read_text())
# Rows and chunks of sample_events() + edge_events(): (rows, chunks, sha256 of both), as the
# encoder wrote them before it was made faster (main at b023e42).
PINNED_ROWS = (13, 104, "df59f167de9dc949bafcc00db204565f96fb8e5294af0323a114bdd6b0cf02db")

LONG = "A paragraph of model output that is long enough to be stored apart from its row. " * 4
FINDINGS = Findings(key_areas=["wal", "checkpoints"], facts=[AreaFacts(area="wal", facts=["appends go to -wal"])],
                    misconceptions=["WAL is a backup"], sources=["https://sqlite.org/wal.html"] * 3)
REVIEW = Review(score=7, approved=False, issues=["too short"], missed_topics=[], suggestions=["add a table"],
                summary=LONG[:300])


def sample_events() -> list:
    request = {"model": "m", "messages": [{"role": "system", "content": LONG}, {"role": "user", "content": "hi"}],
               "temperature": 0.2, "response_format": {"type": "json_schema", "json_schema": {
                   "name": "Findings", "schema": msgspec.json.schema(Findings)}}}
    return [
        RunStarted(task="t", pipeline="content", max_iterations=2, threshold=8,
                   agents={"writer": AgentConfig(model="m", temperature=0.6, system_prompt=LONG)},
                   tools={"writer": [ToolSpec(name="search", description=LONG, parameters={"type": "object"})]}),
        LLMCallRequested(call_id="c/1", agent="writer", step="draft", attempt=1, request=request,
                         request_hash="ab" * 32, round=2),
        LLMCallAnswered(call_id="c/1", agent="writer", request_hash="ab" * 32, content=LONG + "é ✓",
                        tool_calls=[ToolCall(id="t1", name="search", arguments='{"q": "x"}')],
                        usage=Usage(1, 2, 3), latency_ms=12.5, model="m", reused_from=CallRef("r0", 3, "c/1")),
        ToolReturned(call_id="c/1", tool_call_id="t1", name="search", result=LONG, is_error=True),
        FindingsReady(findings=FINDINGS, call_id="c/1"),
        DraftReady(iteration=1, draft=LONG, call_id="c/1", source=CallRef("r0", 5, "w/1")),
        ReviewScored(iteration=1, review=REVIEW, call_id="r/1"),
        ReviewScored(iteration=2, review=Review(score=9, approved=True, issues=[], missed_topics=[], suggestions=[],
                                                summary="ok"), call_id="r/2"),  # a small payload stays in its row
        SweepMember(sweep_id="s", variant="v", spec=SweepSpec(runs=["r0"], at="draft",
                                                              variants=[SweepVariant(label="v", models={"w": "x"})])),
        RunFinished(reason="approved", iterations=1),
    ]


class Blobs:
    """A blob table in a dict: ``put`` keeps each value's chunks as one span of one 'pack'."""

    def __init__(self) -> None:
        self.packs: dict[int, bytes] = {}
        self.resolved = 0

    def put(self, chunks: list[bytes]) -> list[int]:
        self.packs[len(self.packs) + 1] = data = b"".join(chunks)
        return [len(self.packs), 0, len(data)]

    def resolve(self, reference: list) -> bytes:
        self.resolved += 1
        return b"".join(self.packs[reference[i]][reference[i + 1]:reference[i + 1] + reference[i + 2]]
                        for i in range(0, len(reference), 3))


def test_rows_decode_straight_into_the_event_types_with_their_text_spliced_back():
    blobs = Blobs()
    events = sample_events()
    stored = [("run", seq, *pack(event, blobs.put)) for seq, event in enumerate(events, start=1)]
    reader = rows.Reader(blobs.resolve, blobs.packs)
    made = reader.stored("run", [(s, t, v, 1.0, d) for _r, s, t, v, d in stored],
                         lambda *row: row[-1], lambda run, row: pytest.fail(f"took the long way: {row}"))
    assert made == events
    assert blobs.resolved == 0  # every stored value was at hand (in the buffers)
    assert [type(e) for e in made] == [type(e) for e in events]  # the event types themselves
    assert [msgspec.json.encode(e) for e in made] == [encode(e)[2] for e in events]  # export: full JSON events
    for (_run, _seq, type_name, version, data), event in zip(stored, events):
        assert rows.is_row(data)
        fields = msgspec.msgpack.decode(reader.body(data))
        assert type(fields) is list and len(fields) <= len(type(event).__struct_fields__)  # no field names
        assert type_name.encode() not in data  # no type tag: the row's type column holds it
        assert LONG.encode() not in data  # large text is stored apart
        assert decode(type_name, version, data, blobs.resolve) == event  # the long way agrees
    # A payload is stored as the JSON of the answer it was validated from, so the two share chunks.
    assert msgspec.json.encode(FINDINGS) in blobs.packs.values()


def test_a_row_of_65536_parts_or_more_is_an_array32_and_reads_back(tmp_path):
    # Each value stored apart is four parts of its row (three integers, then the next piece):
    # 16,384 messages of 136 characters make 65,537, past array16's count.
    messages = [{"role": "user", "content": f"{i:08d}" + "m" * 128} for i in range(16_384)]
    event = LLMCallRequested(call_id="c/1", agent="writer", step="draft", attempt=1,
                             request={"model": "m", "messages": messages}, request_hash="ab" * 32)
    with SQLiteStore(tmp_path / "log.db") as store:
        assert store.append("big", [event], 0) == 1
        with closing(sqlite3.connect(tmp_path / "log.db")) as con:
            type_name, version, data = con.execute("SELECT type, version, data FROM events").fetchone()
        assert data[0] == 0xDD and rows.is_row(data)  # array32, not taken for a packed row (a map)
        assert store.events("big") == [event]  # the fast path (Reader.stored)
        assert [s.event for s in store.events_of_type("LLMCallRequested")] == [event]
    blobs = Blobs()
    _, _, packed = pack(event, blobs.put)
    assert packed[0] == 0xDD and decode(type_name, version, packed, blobs.resolve) == event  # the long way


def edge_events() -> list:
    """Events whose values sit at the edges of what is stored apart: strings of 128 bytes but
    fewer characters, text-free containers beside long text, long text deep in lists, lines
    of every ending and one longer than a chunk."""
    text = "".join(f"line {i} of a draft, {'é' * (i % 7)} with words {'w ' * (i % 50)}\r\n" if i % 3 else
                   f"short {i}\n\n" for i in range(300))
    request = {
        "accented": "é" * 100,  # 200 bytes, 100 characters: not long
        "schema_and_note": {"schema": msgspec.json.schema(Review), "note": LONG},
        "nested": [LONG, {"x": 1}, ["y" * 130, 7, None], {"deep": [{"deeper": text}]}],
        "text_free": {"only": "é" * 100, "pad": "x" * 100},
        "empty": {}, "numbers": list(range(40)),
        "one_long_line": "z" * 20_000 + "\n" + LONG,
    }
    return [LLMCallRequested(call_id="e/1", agent="writer", step="draft", attempt=1, request=request,
                             request_hash="cd" * 32),
            LLMCallAnswered(call_id="e/1", agent="writer", request_hash="cd" * 32, content=text),
            DraftReady(iteration=1, draft=text[:127] + "é", call_id="e/1")]


def test_rows_and_their_chunks_are_byte_for_byte_those_earlier_releases_wrote():
    # Chunks are shared by their hash across every event and run of a log, so the chunks of a
    # value must never change, nor the rows of an event: pinned, whatever the encoder's code becomes.
    chunks_put: list[bytes] = []

    def put(chunks: list[bytes]) -> list[int]:
        chunks_put.extend(chunks)
        return [len(chunks_put), 0, sum(map(len, chunks))]

    written = [pack(event, put)[2] for event in sample_events() + edge_events()]
    digest = hashlib.sha256(b"".join(written) + b"|" + b"|".join(chunks_put)).hexdigest()
    assert (len(written), len(chunks_put), digest) == PINNED_ROWS


def test_the_stored_field_order_is_pinned_and_only_ever_extended():
    for name, cls in EVENT_TYPES.items():
        assert rows.FIELDS[(name, cls.VERSION)] == cls.__struct_fields__, \
            f"{name}: a new field goes last (with a default) and is appended to rows.FIELDS"
    for key, fields in PINNED.items():
        name, version = key.rsplit(" v", 1)
        assert rows.FIELDS[(name, int(version))][:len(fields)] == tuple(fields), \
            f"{key}: the stored field order of released rows changed; rows written before would misread"


class Finished(RunFinished, frozen=True):
    """RunFinished as a later release might have it: one more field, at the end, with a default."""

    note: str = ""


def test_an_event_type_gaining_a_field_reads_old_rows_and_old_readers_read_new_ones():
    blobs = Blobs()
    reader = rows.Reader(blobs.resolve, blobs.packs)
    old = RunFinished(reason="approved", iterations=2, score=9)
    body = reader.body(pack(old, blobs.put)[2])
    assert msgspec.msgpack.Decoder(rows._row_class(Finished)).decode(body).note == ""  # the default
    new = Finished(reason="approved", iterations=2, score=9, note=LONG)
    stored = pack(new, blobs.put)[2]
    assert decode("RunFinished", 1, stored, blobs.resolve) == old  # the field it does not know is left out


def test_an_older_version_in_a_row_is_upcast_by_its_pinned_field_names(monkeypatch):
    blobs = Blobs()
    data = pack(FindingsReady(findings=FINDINGS, call_id="c/1"), blobs.put)[2]
    # As if FindingsReady had become v2, renaming call_id: its v1 rows decode by v1's names.
    monkeypatch.setattr(FindingsReady, "VERSION", 2)
    monkeypatch.setitem(rows.FIELDS, ("FindingsReady", 1), ("findings", "call_id"))
    monkeypatch.setitem(codec.UPCASTERS, ("FindingsReady", 1), lambda raw: {**raw, "call_id": raw["call_id"] + "!"})
    assert decode("FindingsReady", 1, data, blobs.resolve) == FindingsReady(findings=FINDINGS, call_id="c/1!")


# --- a schema-8 log (packed rows) upgrades in place -----------------------------------------


def schema_8_log(path: Path) -> list[str]:
    """The golden log as schema 8 stored it (its SQL dump): packed rows, a fork sharing its
    parent's prefix, packs of text, an approval run."""
    with closing(sqlite3.connect(path)) as con:
        con.executescript((GOLDEN / "schema8-packed.sql").read_text())
        con.execute("PRAGMA journal_mode = WAL")
        assert con.execute("PRAGMA user_version").fetchone() == (8,)
        return [r for (r,) in con.execute("SELECT run_id FROM runs ORDER BY run_id")]


def views(store: SQLiteStore, runs: list[str]) -> list[bytes]:
    return [msgspec.json.encode(build_view(run_id, store.read(run_id))) for run_id in runs]


def test_a_schema_8_log_upgrades_in_place_with_the_same_folded_views(tmp_path):
    path = tmp_path / "log.db"
    runs = schema_8_log(path)

    before = folded_read_only(path, runs)
    with closing(sqlite3.connect(path)) as con:
        packed = con.execute("SELECT run_id, seq, data FROM events ORDER BY run_id, seq").fetchall()
    with SQLiteStore(path, read_only=True) as store:
        exported = {r: [to_builtins(e) for e in store.events(r)] for r in runs}
        answers = [e for r in runs for e in store.events(r) if isinstance(e, LLMCallAnswered)]
        assert all(any(f.event == a for f in store.find_answers(a.request_hash)) for a in answers)
    with SQLiteStore(path) as store:  # migrates
        assert views(store, runs) == before
        assert {r: [to_builtins(e) for e in store.events(r)] for r in runs} == exported
        assert all(verify(r, store.read(r)).ok for r in runs)
        for answer in answers:
            found = store.find_answers(answer.request_hash)
            assert found and all(f.event.request_hash == answer.request_hash for f in found)
            assert any(f.event == answer for f in found)
        assert store.find_answers("f" * 64) == []
        assert store.vacuum(dry_run=True).packs == 0  # every pack is still referred to
        shared = sqlite3.connect(path).execute("SELECT run_id, upto_seq FROM shares").fetchall()
        assert shared, "the golden log's fork shares its parent's prefix"
        # Its time, its RunForked's, is no longer stored twice (schema 10), and reads the same (above).
        assert sqlite3.connect(path).execute("SELECT recorded_at FROM shares").fetchall() == [(None,)]
        fork, upto = shared[0]
        parent = store.get_run(fork).parent_run_id
        assert store.events(fork, 0, upto) == store.events(parent, 0, upto)
        last = store.last_seq(runs[0])
        more = DraftReady(iteration=9, draft=LONG, call_id="x/1")
        store.append(runs[0], [more], last)
        assert store.events(runs[0])[-1] == more  # old and new rows read as one stream
    with closing(sqlite3.connect(path)) as con:
        assert con.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        # The packed rows are left as they were (and still read, above); new ones are rows.
        assert con.execute("SELECT run_id, seq, data FROM events WHERE (run_id, seq) != (?, ?) ORDER BY run_id, seq",
                           (runs[0], last + 1)).fetchall() == packed
        assert not any(rows.is_row(data) for _, _, data in packed)
        (new,) = con.execute("SELECT data FROM events WHERE run_id = ? AND seq = ?", (runs[0], last + 1)).fetchone()
        assert rows.is_row(new)
        # The reuse lookup keeps the first 16 digits of the hash: the index a quarter of its size.
        assert {len(h) for (h,) in con.execute("SELECT request_hash FROM events WHERE request_hash IS NOT NULL")} \
            == {16}
    with SQLiteStore(path) as store:
        assert views(store, runs)[1:] == before[1:]


def test_an_applications_own_sqlite3_adapters_stay_when_the_store_is_imported(tmp_path):
    """The SQLite store registers identity adapters for bytes and None (a dict lookup instead of
    sqlite3's failed search for one), only where the process has none: an application's stay."""
    script = (
        "import sqlite3\n"
        "mine = lambda b: b'app:' + b\n"
        "sqlite3.register_adapter(bytes, mine)\n"
        "import agentlog.store.sqlite\n"
        "assert sqlite3.adapters[(bytes, sqlite3.PrepareProtocol)] is mine\n"
        "assert (type(None), sqlite3.PrepareProtocol) in sqlite3.adapters\n"
        "print(sqlite3.connect(':memory:').execute('SELECT ?', (b'x',)).fetchone()[0])\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "b'app:x'"
