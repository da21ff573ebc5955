"""One measurement of ``bench/lean.py``, run in a child process against whichever agentlog
is first on ``PYTHONPATH``: this checkout, or an older one for the "before" figure.

It imports only what every release since schema 3 has (``SQLiteStore``, the events,
``agentlog.actors.run``, the content pipeline's fold), never ``bench.common``, so the same
file measures both. Prints one JSON object.
"""

from __future__ import annotations

import gc
import json
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from typing import Any

import msgspec

from agentlog.actors import agent_configs, run
from agentlog.events import (
    AreaFacts,
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
    ToolInvoked,
    ToolReturned,
    Usage,
    request_hash,
)
from agentlog.models import Completion, Gateway
from agentlog.pipelines import fold, get_pipeline
from agentlog.store import SQLiteStore

_SYLLABLES = ["ka", "lo", "mi", "ten", "ra", "sho", "ve", "dan", "ir", "po", "lu", "nex", "tor", "a", "qui", "bel"]


class Text:
    """Model-like output: words from a fixed vocabulary of 3,000, different for every seed."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        vocab = random.Random(0)
        self.words = ["".join(vocab.choice(_SYLLABLES) for _ in range(vocab.randint(1, 4))) for _ in range(3000)]

    def sentence(self, n: int = 12) -> str:
        return " ".join(self.rng.choice(self.words) for _ in range(n)).capitalize() + "."

    def paragraph(self, sentences: int = 4) -> str:
        return " ".join(self.sentence() for _ in range(sentences))


def findings(text: Text) -> Findings:
    areas = [text.sentence(3)[:-1] for _ in range(4)]
    source = "https://example.org/" + text.sentence(2)[:-1].replace(" ", "-")
    return Findings(key_areas=areas,
                    facts=[AreaFacts(area=a, facts=[text.sentence() for _ in range(3)]) for a in areas],
                    misconceptions=[text.sentence() for _ in range(2)], sources=[source])


def review(text: Text) -> Review:
    return Review(score=6, approved=False, issues=[text.sentence() for _ in range(2)], missed_topics=[text.sentence(4)],
                  suggestions=[text.sentence() for _ in range(2)], summary=text.paragraph(2))


def draft(text: Text) -> str:
    return "# " + text.sentence(5) + "\n\n" + "\n\n".join(
        f"## {text.sentence(3)}\n\n{text.paragraph()}\n\n{text.paragraph()}" for _ in range(4)) + "\n"


class VaryingGateway(Gateway):
    """An instant model whose answers differ from run to run (seeded by the task)."""

    def __init__(self) -> None:
        self.output_bytes = 0

    def complete(self, request: dict[str, Any], on_failure: Any = None, **_: Any) -> Completion:
        text = Text(hash((request["messages"][-1]["content"], request.get("temperature"))) & 0xFFFFFFFF)
        fmt = request.get("response_format")
        name = fmt["json_schema"]["name"] if fmt else None
        if name == "Findings":
            content = msgspec.json.encode(findings(text)).decode()
        elif name == "Review":
            content = msgspec.json.encode(review(text)).decode()
        else:
            content = draft(text)
        self.output_bytes += len(content.encode())
        return Completion(content=content, tool_calls=[], prompt_tokens=100, completion_tokens=50, latency_ms=0.0,
                          model=request["model"])


def file_bytes(path: str) -> int:
    con = sqlite3.connect(path)
    try:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return con.execute("PRAGMA page_count").fetchone()[0] * con.execute("PRAGMA page_size").fetchone()[0]
    finally:
        con.close()


def size(n_runs: int) -> dict[str, Any]:
    """Log bytes per standard run (5 calls, 17 events) against the model output it holds."""
    tmp = tempfile.mkdtemp(prefix="agentlog-lean-")
    path = os.path.join(tmp, "size.db")
    SQLiteStore(path).close()
    empty = file_bytes(path)
    gateway = VaryingGateway()
    with SQLiteStore(path) as store:
        for i in range(n_runs):
            summary = run(store, f"benchmark task number {i}", agents=agent_configs("bench-model"), gateway=gateway,
                          max_iterations=2, threshold=9)
            assert summary.last_seq == 17, summary
    total = file_bytes(path) - empty
    return {"runs": n_runs, "log_bytes_per_run": total / n_runs, "output_bytes_per_run": gateway.output_bytes / n_runs,
            "ratio": total / gateway.output_bytes}


def fork(n_forks: int) -> dict[str, Any]:
    """A 23-event run (3 iterations) forked at event 10, ``n_forks`` times, as ``fork`` appends it."""
    tmp = tempfile.mkdtemp(prefix="agentlog-lean-")
    path, own_path = os.path.join(tmp, "fork.db"), os.path.join(tmp, "own.db")
    SQLiteStore(path).close()
    SQLiteStore(own_path).close()
    empty = file_bytes(path)
    with SQLiteStore(path) as store:
        parent = run(store, "the task to fork", agents=agent_configs("bench-model"), gateway=VaryingGateway(),
                     max_iterations=3, threshold=9).run_id
    one_run = file_bytes(path) - empty
    with SQLiteStore(path) as store, SQLiteStore(own_path) as own:
        prefix = store.events(parent, 0, 10)
        for i in range(n_forks):
            store.append(f"fork-{i:04d}", [*prefix, RunForked(parent_run_id=parent, parent_seq=10)], 0)
            own.append(f"fork-{i:04d}", [RunForked(parent_run_id=parent, parent_seq=10)], 0)
    forks = file_bytes(path) - empty - one_run
    own_events = file_bytes(own_path) - empty
    return {"forks": n_forks, "run_bytes": one_run, "forks_bytes": forks, "own_events_bytes": own_events,
            "added_per_fork": (forks - own_events) / n_forks,
            "ratio_to_run_plus_own": forks / (one_run + own_events)}


def standard_events(i: int) -> list:
    """The 17 events of a standard run, with text of its own (as ``bench.common`` but varying)."""
    text = Text(i)
    task = f"task {i}: " + text.sentence()
    agents = agent_configs("bench-model")
    out: list = [RunStarted(task=task, pipeline="content", agents=agents, max_iterations=2, threshold=9)]
    f, d1, d2, r = findings(text), draft(text), draft(text), review(text)
    fjson = msgspec.json.encode(f).decode()

    def call(step: str, agent: str, prompt: str, content: str) -> None:
        request = {"model": "bench-model", "messages": [{"role": "user", "content": prompt}], "temperature": 0.2}
        h = request_hash(request)
        out.append(LLMCallRequested(call_id=f"{step}/1", agent=agent, step=step, attempt=1, request=request,
                                    request_hash=h))
        out.append(LLMCallAnswered(call_id=f"{step}/1", agent=agent, request_hash=h, content=content,
                                   usage=Usage(100, 50, 150), latency_ms=1234.5, model="bench-model"))

    call("research", "researcher", f"Task: {task}", fjson)
    out.append(FindingsReady(findings=f, call_id="research/1"))
    for it, d in ((1, d1), (2, d2)):
        call(f"write-{it}", "writer", f"Task: {task}\n\n{fjson}", d)
        out.append(DraftReady(iteration=it, draft=d, call_id=f"write-{it}/1"))
        rjson = msgspec.json.encode(r).decode()
        call(f"review-{it}", "reviewer", f"Task: {task}\n\n{fjson}\n\n{d}", rjson)
        out.append(ReviewScored(iteration=it, review=r, call_id=f"review-{it}/1"))
    out.append(RunFinished(reason="score_plateau", iterations=2, score=6))
    return out


# Wall time, or with AGENTLOG_BENCH_CLOCK=cpu this process's CPU time: on a shared machine
# the wall time is largely waiting for a core, which hits the two checkouts unequally.
CLOCK = time.process_time if os.environ.get("AGENTLOG_BENCH_CLOCK") == "cpu" else time.perf_counter


def timed(fn) -> float:
    gc.collect()
    start = CLOCK()
    fn()
    return CLOCK() - start


def replay(n_runs: int, reps: int) -> dict[str, Any]:
    """Read and fold ``n_runs`` stored standard runs, each with its own text."""
    tmp = tempfile.mkdtemp(prefix="agentlog-lean-")
    store = SQLiteStore(os.path.join(tmp, "replay.db"))
    run_ids = [f"run-{i:05d}" for i in range(n_runs)]
    for i, run_id in enumerate(run_ids):
        store.append(run_id, standard_events(i), 0)
    store.close()
    pipeline = get_pipeline("content")
    times = []
    for _ in range(reps):
        store = SQLiteStore(os.path.join(tmp, "replay.db"))  # a fresh process's store: nothing cached

        def go() -> None:
            for run_id in run_ids:
                assert fold(pipeline, store.events(run_id)).done

        times.append(timed(go))
        store.close()
    return {"runs": n_runs, "seconds": statistics.median(times), "times": times}


def resume(length: int, reps: int) -> dict[str, Any]:
    """Read, fold and decide a run of ``length`` events (as ``bench/resume.py`` builds it)."""
    tmp = tempfile.mkdtemp(prefix="agentlog-lean-")
    path = os.path.join(tmp, "resume.db")
    started = standard_events(0)[0]
    request = {"model": "bench-model", "messages": [{"role": "user", "content": "Task: t\n\n" + "x" * 600}]}
    events: list = [started]
    i = 0
    while len(events) < length:
        call_id = f"tool-loop/{i}"
        events += [
            LLMCallRequested(call_id=call_id, agent="researcher", step=f"tool-{i}", attempt=1, request=request,
                             request_hash=f"{i:064x}"),
            ToolInvoked(call_id=call_id, tool_call_id=f"t{i}", name="search_docs", arguments='{"query": "q"}'),
            ToolReturned(call_id=call_id, tool_call_id=f"t{i}", name="search_docs", result="r" * 400),
            LLMCallAnswered(call_id=call_id, agent="researcher", request_hash=f"{i:064x}", content="c" * 300,
                            usage=Usage(100, 50, 150), model="bench-model"),
        ]
        i += 1
    events = events[:length]
    with SQLiteStore(path) as store:
        seq = 0
        for start in range(0, length, 1000):
            seq = store.append("long", events[start:start + 1000], seq)
    pipeline = get_pipeline("content")
    times = []
    for _ in range(reps):
        store = SQLiteStore(path)

        def go() -> None:
            state = fold(pipeline, store.events("long"))
            pipeline.decide(state)

        times.append(timed(go))
        store.close()
    return {"events": length, "seconds": statistics.median(times), "times": times}




def codec(n_runs: int) -> dict[str, Any]:
    """Stored text of ``n_runs`` standard runs, compressed per chunk and per pack by each
    candidate codec: stored bytes against raw, and decompression time per run."""
    import bz2
    import lzma
    import zlib

    tmp = tempfile.mkdtemp(prefix="agentlog-lean-")
    path = os.path.join(tmp, "codec.db")
    with SQLiteStore(path) as store:
        for i in range(n_runs):
            run(store, f"benchmark task number {i}", agents=agent_configs("bench-model"), gateway=VaryingGateway(),
                max_iterations=2, threshold=9)
    con = sqlite3.connect(path)
    from agentlog.store.blobs import inflate

    packs = {pack: inflate(c, d) for pack, c, d in con.execute("SELECT id, codec, data FROM packs")}
    chunks = [packs[p][s:s + n] for p, s, n in con.execute("SELECT pack, start, size FROM blobs")]
    con.close()
    candidates = {
        "zlib-1": (lambda b: zlib.compress(b, 1), zlib.decompress),
        "zlib-6": (lambda b: zlib.compress(b, 6), zlib.decompress),
        "zlib-9": (lambda b: zlib.compress(b, 9), zlib.decompress),
        "bz2-9": (bz2.compress, bz2.decompress),
        "lzma": (lzma.compress, lzma.decompress),
    }
    try:  # libdeflate writes the same zlib streams; read as the store reads them (blobs.inflate)
        import deflate

        from agentlog.store.blobs import ZLIB
        from agentlog.store.blobs import inflate as store_inflate

        for level in (6, 10, 12):
            candidates[f"libdeflate-{level}"] = (lambda b, level=level: bytes(deflate.zlib_compress(b, level)),
                                                 lambda b: store_inflate(ZLIB, b))
    except ImportError:  # a checkout before libdeflate
        pass
    raw = sum(map(len, chunks))
    out: dict[str, Any] = {"runs": n_runs, "raw_bytes_per_run": raw / n_runs, "chunks_per_run": len(chunks) / n_runs,
                           "packs_per_run": len(packs) / n_runs}
    for unit, items in (("chunk", chunks), ("pack", list(packs.values()))):
        for name, (compress, decompress) in candidates.items():
            stored = [compress(b) for b in items]

            def inflate_all(stored: list[bytes] = stored, decompress: Any = decompress) -> None:
                for b in stored:
                    decompress(b)

            seconds = statistics.median(timed(inflate_all) for _ in range(9))
            out[f"{unit}/{name}"] = {"ratio": sum(map(len, stored)) / raw,
                                     "decompress_us_per_run": seconds / n_runs * 1e6}
    return out


def layout(n_runs: int) -> dict[str, Any]:
    """Raw inserts of the packed rows of ``n_runs`` standard runs (100 rows a commit, runs
    interleaved as concurrent runs write them), into ``WITHOUT ROWID`` and into a rowid table
    with a unique ``(run_id, seq)`` index: rows per second, and bytes."""
    tmp = tempfile.mkdtemp(prefix="agentlog-lean-")
    with SQLiteStore(os.path.join(tmp, "src.db")) as store:
        for i in range(50):
            store.append(f"{random.Random(i).getrandbits(64):016x}", standard_events(i), 0)
        template = store._db.execute("SELECT seq, type, version, recorded_at, data FROM events").fetchall()
    rng = random.Random(1)
    run_ids = [f"{rng.getrandbits(64):016x}" for _ in range(n_runs)]
    rows = [(run_id, *template[(i * 17 + k) % len(template)][:1], *template[(i * 17 + k) % len(template)][1:])
            for k in range(17) for i, run_id in enumerate(run_ids)]
    rows = [(r[0], k + 1, *r[2:]) for k, r in zip([j // n_runs for j in range(len(rows))], rows)]
    tables = {
        "without_rowid": "CREATE TABLE events (run_id TEXT NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL, "
                         "version INTEGER NOT NULL, recorded_at REAL NOT NULL, data BLOB NOT NULL, "
                         "PRIMARY KEY (run_id, seq)) WITHOUT ROWID",
        "rowid": "CREATE TABLE events (id INTEGER PRIMARY KEY, run_id TEXT NOT NULL, seq INTEGER NOT NULL, "
                 "type TEXT NOT NULL, version INTEGER NOT NULL, recorded_at REAL NOT NULL, data BLOB NOT NULL); "
                 "CREATE UNIQUE INDEX events_by_run ON events (run_id, seq)",
    }
    out: dict[str, Any] = {"rows": len(rows)}
    for name, ddl in tables.items():
        times, reads, size = [], [], 0
        for rep in range(3):
            path = os.path.join(tmp, f"{name}-{rep}.db")
            con = sqlite3.connect(path, isolation_level=None)
            con.execute("PRAGMA journal_mode = WAL")
            con.execute("PRAGMA synchronous = NORMAL")
            con.executescript(ddl)
            start = time.perf_counter()
            for i in range(0, len(rows), 100):
                con.execute("BEGIN")
                con.executemany("INSERT INTO events (run_id, seq, type, version, recorded_at, data) "
                                "VALUES (?, ?, ?, ?, ?, ?)", rows[i:i + 100])
                con.execute("COMMIT")
            times.append(time.perf_counter() - start)
            start = time.perf_counter()
            for run_id in run_ids:
                con.execute("SELECT run_id, seq, type, version, recorded_at, data FROM events "
                            "WHERE run_id = ? AND seq > 0 ORDER BY seq", (run_id,)).fetchall()
            reads.append(time.perf_counter() - start)
            con.close()
            size = file_bytes(path)
        out[name] = {"rows_per_s": len(rows) / statistics.median(times), "bytes_per_row": size / len(rows),
                     "read_rows_per_s": len(rows) / statistics.median(reads)}
    return out


if __name__ == "__main__":
    what, *args = sys.argv[1:]
    measure = {"size": size, "fork": fork, "replay": replay, "resume": resume, "codec": codec, "layout": layout}[what]
    print(json.dumps(measure(*map(int, args))))
