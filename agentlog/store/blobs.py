"""The blob table: large text stored once per log, keyed by the hash of its bytes.

Event rows refer to blobs by id (``agentlog.events.packed``); this module owns the
table's SQL and the compression. A blob is stored compressed when that saves at least
``MIN_SAVING`` of its size (zlib level 6: see docs/benchmarks.md, "Choosing the codec").
Ids are never reused (AUTOINCREMENT), so a cache keyed by id stays true in every
process even after ``vacuum`` drops blobs.
"""

from __future__ import annotations

import hashlib
import sqlite3
import zlib

RAW, ZLIB = 0, 1
LEVEL = 6
MIN_SAVING = 0.1
CACHE_BYTES = 32 << 20

SELECT_ID = "SELECT id FROM blobs WHERE hash = ?"
INSERT = "INSERT INTO blobs (hash, codec, data) VALUES (?, ?, ?)"
SELECT_ONE = "SELECT codec, data FROM blobs WHERE id = ?"
SELECT_MANY = "SELECT id, codec, data FROM blobs WHERE id IN (SELECT value FROM json_each(?))"


def digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def deflate(data: bytes) -> tuple[int, bytes]:
    """``(codec, stored bytes)``: compressed only where that pays."""
    if len(data) >= 64:
        packed = zlib.compress(data, LEVEL)
        if len(packed) <= len(data) * (1 - MIN_SAVING):
            return ZLIB, packed
    return RAW, data


def inflate(codec: int, stored: bytes) -> bytes:
    if codec == ZLIB:
        return zlib.decompress(stored)
    if codec == RAW:
        return bytes(stored)
    raise ValueError(f"unknown blob codec {codec}")


class BlobWriter:
    """``put(chunk) -> id`` inside the caller's write transaction: an existing blob's id,
    or a new row. Lives for one transaction (a rolled-back insert must not be remembered)."""

    def __init__(self, db: sqlite3.Connection):
        self._db = db
        self._seen: dict[bytes, int] = {}

    def put(self, chunk: bytes) -> int:
        key = digest(chunk)
        found = self._seen.get(key)
        if found is not None:
            return found
        row = self._db.execute(SELECT_ID, (key,)).fetchone()
        if row is None:
            codec, stored = deflate(chunk)
            blob_id = self._db.execute(INSERT, (key, codec, stored)).lastrowid
        else:
            blob_id = row[0]
        self._seen[key] = blob_id
        return blob_id

    def forget(self) -> None:
        """After a rollback (to a savepoint): ids put since may no longer exist."""
        self._seen.clear()


class BlobCache:
    """Blobs already read, by id, bounded by their total size."""

    def __init__(self, limit: int = CACHE_BYTES):
        self._items: dict[int, bytes] = {}
        self._size = 0
        self._limit = limit

    def get(self, blob_id: int) -> bytes | None:
        return self._items.get(blob_id)

    def add(self, blob_id: int, data: bytes) -> None:
        if self._size + len(data) > self._limit:
            self._items.clear()
            self._size = 0
        self._items[blob_id] = data
        self._size += len(data)


class BlobReader:
    """The log's blobs as a mapping for the decoder, fetched on first use and cached."""

    def __init__(self, db: sqlite3.Connection, cache: BlobCache):
        self._db, self._cache = db, cache

    def __getitem__(self, blob_id: int) -> bytes:
        data = self._cache.get(blob_id)
        if data is None:
            row = self._db.execute(SELECT_ONE, (blob_id,)).fetchone()
            if row is None:
                raise KeyError(blob_id)
            data = inflate(*row)
            self._cache.add(blob_id, data)
        return data
