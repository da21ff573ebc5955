"""Opening the log a ``--db`` names, on whichever backend it names.

The one place that knows every backend: the backends themselves import ``url`` (to parse and
redact), never this module, so the store's files stay free of import circles. Backends are
imported on first use, so an SQLite user never loads the PostgreSQL driver.
"""

from __future__ import annotations

import os

from .aio import AsyncReads, AsyncSQLiteStore
from .protocol import Store
from .url import is_postgres, sqlite_path


def open_store(target: str | os.PathLike[str], *, create: bool = True, read_only: bool = False) -> Store:
    """The store ``target`` names, open: ``PostgresStore`` for a ``postgresql://`` URL,
    ``SQLiteStore`` for a path or ``sqlite:///path``; ``StoreURLError`` for another scheme.

    ``create``: make the log (the SQLite file, the Postgres tables) if it is not there yet;
    ``read_only``: never write, not even a migration.
    """
    if is_postgres(target):
        from .postgres import PostgresStore

        return PostgresStore(str(target), create=create, read_only=read_only)
    from .sqlite import SQLiteStore

    return SQLiteStore(sqlite_path(target), create=create, read_only=read_only)


async def open_async_store(target: str) -> AsyncReads:
    """The read-only asyncio face of the log ``target`` names (a path, ``sqlite:///path``, or a
    ``postgresql://`` URL), as ``open_store`` picks the sync one."""
    if is_postgres(target):
        from .aio_postgres import AsyncPostgresStore

        return await AsyncPostgresStore.open(target)
    return await AsyncSQLiteStore.open(sqlite_path(target), read_only=True)
