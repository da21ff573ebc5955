"""Pure parts of an append and of opening, shared by the sync and async faces."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from agentlog.events import TERMINAL_TYPES, Event, LLMCallAnswered, RunForked, RunQueued, pack
from agentlog.events.packed import Put, Texts

from . import index, schema
from .errors import AmbiguousRunId, RunNotFound, SchemaError, StoreError
from .records import RunSummary, StoredEvent


def encode_batch(
    run_id: str, events: Sequence[Event], expected_seq: int, now: float, row: RunSummary | None,
    put: Put, shared: int = 0, times: Sequence[float] | None = None, texts: Texts | None = None,
) -> tuple[list[tuple], RunSummary | None]:
    """The rows to insert and the runs-index row after them.

    ``put`` stores a chunk of large text and returns its blob id (``texts``: the values
    stored before, by their bytes, see ``rows.pack``); the first ``shared``
    events are the parent's (a fork's shared prefix): folded into the index, not stored.
    Events are recorded at ``now``, or each at its own time in ``times`` (events copied
    from another log keep theirs).
    """
    rows = []
    for offset in range(shared, len(events)):
        event = events[offset]
        type_name, version, data = pack(event, put, texts)
        answer = event.request_hash[:schema.ANSWER_KEY] if type(event) is LLMCallAnswered else None
        rows.append((run_id, expected_seq + offset + 1, type_name, version, now if times is None else times[offset],
                     data, answer))
    return rows, index.fold(row, run_id, expected_seq + 1, events, now, times)


def answers_to(request_hash: str, found: list[StoredEvent]) -> list[StoredEvent]:
    """The answers of ``found`` (looked up by the first characters of the hash) to this request."""
    return [s for s in found if getattr(s.event, "request_hash", None) == request_hash]


def queue_writes(run_id: str, events: Sequence[Event], now: float) -> list[tuple[str, tuple]]:
    """The statement that keeps the run queue in step with a batch: a ``RunQueued`` puts the
    run in, its last event (``RunFinished``, ``RunFailed``) takes it out. A fork's copy of its
    parent's events says nothing about the fork: only what follows its ``RunForked`` counts."""
    write: tuple[str, tuple] | None = None
    for event in events:
        kind = type(event)  # by exact type, as the runs index folds them (event types are not subclassed)
        if kind not in _QUEUE_TYPES:
            continue
        if kind is RunForked:
            write = None
        elif kind is RunQueued:
            write = (schema.ENQUEUE, (run_id, now))
        else:
            write = (schema.DEQUEUE, (run_id,))
    return [write] if write is not None else []


_QUEUE_TYPES = frozenset({RunForked, RunQueued, *TERMINAL_TYPES})


def fork_point(
    events: Sequence[Event], expected_seq: int, times: Sequence[float] | None = None
) -> tuple[str, int] | None:
    """``(parent run, n)`` when a new run's batch starts with ``n`` events copied from its
    parent, then its ``RunForked``: the prefix the store may share instead of copying.

    A shared prefix reads back as recorded at one time (the share's), so events copied with
    their own ``times`` are shared only if their prefix was recorded at one time."""
    if expected_seq != 0:
        return None
    for position, event in enumerate(events):
        if isinstance(event, RunForked):
            if position == event.parent_seq and position >= 1:
                if times is not None and len(set(times[:position])) != 1:
                    return None
                return event.parent_run_id, position
            return None
    return None


def check_schema_version(found: int, path: str, known: int = schema.SCHEMA_VERSION) -> None:
    if found > known:
        raise SchemaError(
            f"{path} was written by a newer agentlog (schema {found}, this release knows "
            f"{known}): upgrade agentlog to open it"
        )


def check_identity(path: str, identity: tuple[int, int, int], columns: list[tuple[str, str]]) -> int:
    """The file's schema version if it is an agentlog database this release can open (a new,
    empty file is version 0); ``SchemaError`` for another application's file or a newer schema.

    ``identity`` is ``(application_id, user_version, objects)`` and ``columns`` the
    ``(table, column)`` pairs (schema.IDENTITY, schema.TABLE_COLUMNS), read before any pragma.
    """
    application_id, found, objects = identity
    if application_id == schema.APPLICATION_ID:
        check_schema_version(found, path)
        return found
    if application_id == 0:
        if found == 0 and objects == 0:
            return 0
        tables: dict[str, set[str]] = {}
        for table, column in columns:
            tables.setdefault(table, set()).add(column)
        if 1 <= found < schema.APPLICATION_ID_SINCE and all(
            wanted <= tables.get(name, set()) for name, wanted in schema.FIRST_TABLES.items()
        ):
            return found  # a log written before the application id was set
    raise SchemaError(f"{path} is an SQLite database, but not an agentlog one")


def read_only_uri(path: str) -> str:
    """The URI that opens ``path`` for reading only.

    In a directory this process cannot write (a read-only mount, say), SQLite cannot make
    the WAL index a reader of a WAL database needs; no writer can be at work there either,
    so the file is opened ``immutable``. A write-ahead file left non-empty there holds
    events that immutable reading would miss: that is refused.
    """
    file = Path(path).resolve()
    uri = f"{file.as_uri()}?mode=ro"
    if os.access(file.parent, os.W_OK) or Path(f"{file}-shm").exists():
        return uri
    wal = Path(f"{file}-wal")
    if wal.exists() and wal.stat().st_size > 0:
        raise StoreError(f"{path}: the log's last events are in {wal.name}, which cannot be read in a "
                         f"directory that is not writable; copy the log and its {wal.name} elsewhere to read it")
    return uri + "&immutable=1"


def prefix_bounds(prefix: str) -> tuple[str, str]:
    if not prefix:
        raise RunNotFound(prefix)
    return prefix, prefix + "\U0010ffff"


def pick_run_id(prefix: str, rows: list[tuple]) -> str:
    """The run a prefix names, from at most two ids that start with it (RUN_IDS_BY_PREFIX)."""
    if not rows:
        raise RunNotFound(prefix, hint=" (see `agentlog runs`)")
    if len(rows) > 1 and rows[0][0] != prefix:
        raise AmbiguousRunId(f"run id prefix {prefix!r} matches more than one run; give more of it")
    return rows[0][0]


def lineage_of(rows: list[tuple]) -> list[str]:
    """LINEAGE's rows as run ids, cut where a parent repeats."""
    chain: list[str] = []
    for (run_id,) in rows:
        if run_id in chain:
            break
        chain.append(run_id)
    return chain
