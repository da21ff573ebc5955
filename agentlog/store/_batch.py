"""Pure parts of an append and of opening, shared by the sync and async faces."""

from __future__ import annotations

from collections.abc import Sequence

from agentlog.events import Event, encode

from . import index, schema
from .errors import SchemaError
from .records import RunSummary


def encode_batch(
    run_id: str, events: Sequence[Event], expected_seq: int, now: float, row: RunSummary | None
) -> tuple[list[tuple], RunSummary | None]:
    """The rows to insert and the runs-index row after them."""
    rows = []
    for offset, event in enumerate(events, start=1):
        type_name, version, data = encode(event)
        seq = expected_seq + offset
        rows.append((run_id, seq, type_name, version, now, data.decode()))
        row = index.apply(row, run_id, seq, now, event)
    return rows, row


def check_schema_version(found: int, path: str) -> None:
    if found > schema.SCHEMA_VERSION:
        raise SchemaError(
            f"{path} was written by a newer agentlog (schema {found}, this release knows "
            f"{schema.SCHEMA_VERSION}): upgrade agentlog to open it"
        )


def prefix_bounds(prefix: str) -> tuple[str, str]:
    return prefix, prefix + "\U0010ffff"
