"""The event log in an SQLite file: the embedded default store (synchronous face).

The store's logic is ``SQLStore``'s; this is the SQLite side of it: the file, its
migrations (``PRAGMA user_version``), ``BEGIN IMMEDIATE`` as the write transaction (one
writer at a time, so a group's checks are exact), and sqlite3's errors.
"""

from __future__ import annotations

import os
import sqlite3
import time
from contextlib import AbstractContextManager
from pathlib import Path

from . import schema
from ._base import SQLStore, VacuumReport, _rollback
from ._batch import check_identity, read_only_uri
from .errors import DiskFull, SchemaError, StoreBusy, StoreError

__all__ = ["SYNCHRONOUS", "SQLiteStore", "VacuumReport", "translate_errors"]

SYNCHRONOUS = {"normal": "NORMAL", "full": "FULL", "off": "OFF"}

# sqlite3 binds an int, float, str or bytearray parameter as it is, and looks any other
# (bytes, None: an event's row, a NULL) up as an adapter first, raising and clearing an
# AttributeError each time it finds none (~40 parameters a run). Adapters that return the
# value itself (``bytes(b)`` is ``b``; ``{}.get(None)`` is None) make that a dict lookup.
# Registered only where the process has none of its own: an application's adapter stays.
for _type, _same in ((bytes, bytes), (type(None), {}.get)):
    if (_type, sqlite3.PrepareProtocol) not in sqlite3.adapters:
        sqlite3.register_adapter(_type, _same)
del _type, _same


def translate_errors(path: str) -> "_Translate":
    """The one place where sqlite3 errors become the store's own: ``with translate_errors(path):``."""
    return _Translate(path)


class _Translate(AbstractContextManager[None]):
    """``translate_errors``: a plain context manager (a store keeps one and enters it on every
    call; a generator's would be made anew each time)."""

    __slots__ = ("path",)

    def __init__(self, path: str):
        self.path = path

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        if kind is None or not issubclass(kind, sqlite3.DatabaseError):
            return False  # the store's own errors too
        path = self.path
        if issubclass(kind, sqlite3.OperationalError):
            if "locked" in str(exc) or "busy" in str(exc):
                raise StoreBusy(f"{path}: database is locked by another process ({exc})") from exc
            code = getattr(exc, "sqlite_errorcode", 0) & 0xFF  # the primary code of an extended one
            if code == sqlite3.SQLITE_FULL:
                raise DiskFull(f"{path}: the disk is full (every event written before is kept)") from exc
            if code in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY) and not os.access(Path(path).parent, os.W_OK):
                raise StoreError(f"{path}: the log's directory cannot be written ({exc}); "
                                 f"commands that only read the log still work") from exc
            raise StoreError(f"{path}: {exc}") from exc
        raise SchemaError(f"{path} is not an agentlog database ({exc})") from exc


class SQLiteStore(SQLStore):
    """Append-only event streams, one per run, in one SQLite file."""

    BEGIN_WRITE = BEGIN_MAINTENANCE = "BEGIN IMMEDIATE"  # one writer at a time
    CONFLICT = KEY_TAKEN = (sqlite3.IntegrityError,)
    DB_ERROR = (sqlite3.Error,)
    ONE_WRITER = True  # BEGIN IMMEDIATE

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        create: bool = True,
        durability: str = "normal",
        busy_timeout: float = 10.0,
        read_only: bool = False,
    ):
        """Open (creating with ``create``, and migrating) the log at ``path``.

        ``read_only`` never writes, not even a migration or a pragma: a log of an older
        schema is read as it is, and a log in a directory that is not writable can be read.
        """
        self.path = str(path)
        if self.path != ":memory:":
            p = Path(self.path)
            if not p.exists() and not create:
                raise SchemaError(f"no agentlog database at {self.path}")
            if p.is_dir():
                raise SchemaError(f"{self.path} is a directory, not a database file")
            if create:
                try:
                    p.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise StoreError(f"cannot make the directory of {self.path}: {exc.strerror}") from None
        self.where = self.path
        self._translate = translate_errors(self.path)
        with self._translate:
            if read_only and self.path != ":memory:":
                self._db = sqlite3.connect(read_only_uri(self.path), uri=True, timeout=busy_timeout,
                                           isolation_level=None, check_same_thread=False)
            else:
                self._db = sqlite3.connect(
                    self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
                )
            self._start()
            try:
                if read_only:
                    found = self._inspect()
                    if found == 0:
                        raise SchemaError(f"{self.path} is not an agentlog database (it holds no log)")
                    self._before_shares = found < schema.SHARES_VERSION
                else:
                    self._open(durability, busy_timeout)
            except BaseException:
                self._db.close()
                raise

    def _execute_waiting(self, sql: str, timeout: float) -> None:
        """Execute ``sql``, retrying while the database is busy, up to ``timeout`` seconds.

        Switching a new file to WAL while another connection writes it fails at once with
        SQLITE_BUSY (SQLite skips its busy handler there to avoid a deadlock).
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._db.execute(sql)
                return
            except sqlite3.OperationalError as exc:
                busy = "locked" in str(exc) or "busy" in str(exc)
                if not busy or time.monotonic() >= deadline:
                    raise
                time.sleep(0.005)

    def _open(self, durability: str, busy_timeout: float) -> None:
        found = self._inspect()  # refuses another application's file before any pragma changes it
        for pragma in schema.PRAGMAS:
            self._execute_waiting(pragma, busy_timeout)
        self._db.execute(f"PRAGMA synchronous = {SYNCHRONOUS[durability]}")
        if found < schema.SCHEMA_VERSION:
            self._migrate()

    def _inspect(self) -> int:
        """The schema version of this agentlog database, read in one snapshot (see ``check_identity``)."""
        self._db.execute("BEGIN")
        try:
            identity = self._db.execute(schema.IDENTITY).fetchone()
            columns = self._db.execute(schema.TABLE_COLUMNS).fetchall()
        finally:
            self._db.execute("COMMIT")
        return check_identity(self.path, identity, columns)

    def _migrate(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            # Re-read under the write lock: another opener may have migrated meanwhile.
            found = check_identity(self.path, self._db.execute(schema.IDENTITY).fetchone(),
                                   self._db.execute(schema.TABLE_COLUMNS).fetchall())
            for number, (_name, sql) in enumerate(schema.MIGRATIONS[found:], start=found + 1):
                for statement in _statements(sql):
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {number}")
            self._db.execute("COMMIT")
        except BaseException:
            _rollback(self._db)
            raise

    def _errors(self) -> AbstractContextManager[None]:
        return self._translate

    def _size(self) -> int:
        try:
            return os.path.getsize(self.path)
        except OSError:  # ":memory:"
            return 0

    def _compact(self) -> None:
        self._db.execute("VACUUM")

def _statements(sql: str) -> list[str]:
    return [s.strip() for s in sql.split(";") if s.strip()]
