"""3. Replay and fold: events/s to read and fold 1,000 stored runs, vs decoding alone.

The runs are 17-event research -> 2x(write, review) runs. "agentlog" is what a replay
does: ``store.events(run_id)`` (SQL, decode, upcast check) and the content pipeline's
fold, run by run. The baseline is msgspec decoding the same stored bytes, already in
memory, with one typed decoder per event type.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import msgspec

from agentlog.events import EVENT_TYPES, Event, encode
from agentlog.pipelines import fold, get_pipeline
from agentlog.store import SQLiteStore

from .common import interleaved, median, sample_run_events


class _Row(msgspec.Struct):
    type: str
    data: bytes


def _json_row(event: Event) -> _Row:
    type_name, _version, data = encode(event)
    return _Row(type_name, data)


def bench(quick: bool) -> dict[str, Any]:
    n_runs = 1000
    reps = 5 if quick else 9
    tmp = tempfile.mkdtemp(prefix="agentlog-bench-")
    store = SQLiteStore(os.path.join(tmp, "replay.db"))
    events = sample_run_events()
    run_ids = [f"run-{i:05d}" for i in range(n_runs)]
    for run_id in run_ids:
        store.append(run_id, events, 0)
    pipeline = get_pipeline("content")
    # The baseline decodes the events' JSON (the format of rows before schema 4).
    rows = [(e.type, e.data) for e in (_json_row(e) for e in events)] * n_runs
    n_events = len(rows)
    decoders = {name: msgspec.json.Decoder(cls) for name, cls in EVENT_TYPES.items()}

    def replay() -> None:
        for run_id in run_ids:
            state = fold(pipeline, store.events(run_id))
            assert state.done

    def read_only() -> None:
        for run_id in run_ids:
            store.read(run_id)

    def sql_only() -> None:
        for run_id in run_ids:
            store._fetch("SELECT run_id, seq, type, version, recorded_at, data FROM events "
                         "WHERE run_id = ? AND seq > 0 ORDER BY seq", (run_id,))

    def decode_only() -> None:
        for type_name, data in rows:
            decoders[type_name].decode(data)

    replay(), decode_only()  # warm up
    times = interleaved(reps, replay=replay, read=read_only, sql=sql_only, decode=decode_only)
    ratio = median([d / r for r, d in zip(times["replay"], times["decode"])])
    rate = {k: n_events / median(v) for k, v in times.items()}
    store.close()
    return {
        "runs": n_runs, "events": n_events, "reps": reps,
        "replay_events_per_s": rate["replay"], "read_events_per_s": rate["read"],
        "sql_rows_per_s": rate["sql"], "decode_only_events_per_s": rate["decode"],
        "replay_seconds_for_1000_runs": median(times["replay"]),
        "ratio_to_decode_only": ratio,
        "goal": ">= 0.5 x decode-only; 1,000 runs well under 1 s",
        "met": ratio >= 0.5 and median(times["replay"]) < 0.5,
    }
