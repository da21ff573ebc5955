"""The event log: one append-only stream per run, SQLite as the embedded default.

``SQLiteStore`` is the synchronous face (actors, CLI); ``AsyncSQLiteStore`` the asyncio
face (web viewer, asyncio applications). Both run the same SQL over the same schema.
"""

from .aio import AsyncSQLiteStore
from .errors import (
    AmbiguousRunId,
    ConcurrencyError,
    DamagedEvent,
    DiskFull,
    LeaseHeld,
    LeaseLost,
    RunNotFound,
    SchemaError,
    StoreBusy,
    StoreError,
)
from .records import Lease, PartialAnswer, RunSummary, StoredEvent
from .schema import MIGRATIONS, SCHEMA_VERSION
from .sqlite import SQLiteStore, VacuumReport

__all__ = [
    "MIGRATIONS", "SCHEMA_VERSION", "AmbiguousRunId", "AsyncSQLiteStore", "ConcurrencyError", "DamagedEvent",
    "DiskFull", "Lease", "LeaseHeld", "LeaseLost", "PartialAnswer", "RunNotFound", "RunSummary", "SQLiteStore",
    "SchemaError", "StoreBusy", "StoreError", "StoredEvent", "VacuumReport",
]
