"""The event log: one append-only stream per run, SQLite as the embedded default, PostgreSQL to share it.

``Store`` is the protocol both backends offer; ``open_store(target)`` opens the one a path
or URL names. ``SQLiteStore`` is the synchronous face of a file (actors, CLI),
``AsyncSQLiteStore`` its asyncio face (web viewer, asyncio applications);
``PostgresStore`` keeps the same log in a PostgreSQL database (psycopg is imported only
when it is used).
"""

from typing import TYPE_CHECKING, Any

from .aio import AsyncSQLiteStore
from .copy import Copied, Diverged, copy_log
from .errors import (
    AmbiguousRunId,
    ConcurrencyError,
    DamagedEvent,
    DiskFull,
    LeaseHeld,
    LeaseLost,
    LogUnavailable,
    RunNotFound,
    SchemaError,
    StoreBusy,
    StoreError,
)
from .protocol import Store
from .follow import follow
from .records import Lease, PartialAnswer, RunSummary, StoredEvent
from .schema import MIGRATIONS, SCHEMA_VERSION
from .sqlite import SQLiteStore, VacuumReport
from .opening import open_store
from .url import StoreURLError, redact

if TYPE_CHECKING:
    from .postgres import PostgresStore

__all__ = [
    "MIGRATIONS", "SCHEMA_VERSION", "AmbiguousRunId", "AsyncSQLiteStore", "ConcurrencyError", "Copied",
    "DamagedEvent", "Diverged", "DiskFull", "Lease", "LeaseHeld", "LeaseLost", "LogUnavailable", "PartialAnswer",
    "PostgresStore", "RunNotFound", "RunSummary", "SQLiteStore", "SchemaError", "Store", "StoreBusy", "StoreError",
    "StoreURLError", "StoredEvent", "VacuumReport", "copy_log", "follow", "open_store", "redact",
]


def __getattr__(name: str) -> Any:
    if name == "PostgresStore":
        from .postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module 'agentlog.store' has no attribute {name!r}")
