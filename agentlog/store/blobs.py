"""The blob tables: large text stored once per log, found by the hash of its bytes.

``agentlog.events.packed`` cuts large text into chunks. The new chunks of one write
transaction are stored together as one *pack*, compressed as a whole where that pays
(a chunk of a few hundred bytes compressed alone gains little and costs a decompression
on every read: docs/benchmarks.md, "Choosing the codec"). ``blobs`` maps each chunk's
hash (the first 16 bytes of its sha256: the content address) to where its bytes are,
``(pack, start, size)``; a chunk already stored is never stored again.

An event row refers to its text by those locations, adjacent ones merged into one span,
so a read needs the packs only, never the hash table. Locations never move, and ids are
never reused (AUTOINCREMENT), so a cache of packs by id stays true in every process even
after ``vacuum`` drops packs. This module owns the tables' SQL and the codec.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from agentlog.events import blob_refs
from agentlog.events.packed import MissingBlob, is_packed

try:  # libdeflate: the same zlib streams, written ~2x and read ~3x as fast (docs/benchmarks.md, 7)
    import deflate as _libdeflate
except ImportError:  # pragma: no cover - a declared dependency; stdlib zlib reads and writes the same
    _libdeflate = None

RAW, ZLIB = 0, 1
LEVEL = 6  # stdlib zlib's
LIBDEFLATE_LEVEL = 10  # libdeflate's first level of its slower, closer search: smaller than zlib's 9
# libdeflate inflates into a buffer of a size given beforehand, and a pack's raw size is
# not stored: it is guessed from the stored size (text deflates to 1/4-1/3); a pack that
# inflates to more (or a damaged one) is read again by zlib, which needs no size.
INFLATE_GUESS = 8
# A pack this small (a transaction that brings little new text) is deflated by stdlib zlib:
# libdeflate's closer search sets up tables that cost several times zlib's time on a few
# hundred bytes, for a byte or two saved (docs/benchmarks.md, 11).
SMALL_PACK = 1024
MIN_SAVING = 0.1
HASH_BYTES = 16
CACHE_BYTES = 32 << 20

SELECT_LOCATION = "SELECT pack, start, size FROM blobs WHERE hash = ?"
NEW_PACK = "INSERT INTO packs (codec, data) VALUES (0, ?) RETURNING id"  # with b"": filled by FILL_PACK
FILL_PACK = "UPDATE packs SET codec = ?, data = ? WHERE id = ?"
# A chunk another transaction stored meanwhile (possible on Postgres, where writers of
# different runs do not exclude each other) is not stored twice: its location is read back.
INSERT = "INSERT INTO blobs (hash, pack, start, size) VALUES (?, ?, ?, ?) ON CONFLICT (hash) DO NOTHING"
SELECT_PACK = "SELECT codec, data FROM packs WHERE id = ?"
SELECT_PACKS = "SELECT id, codec, data FROM packs WHERE id IN (SELECT value FROM json_each(?))"

Location = tuple[int, int, int]  # pack, start, size


class Connection(Protocol):
    """What the blob tables need of a database connection: ``sqlite3``'s ``execute``, which
    the Postgres store's connection offers too."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Any: ...


def digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()[:HASH_BYTES]


def deflate(data: bytes) -> tuple[int, bytes]:
    """``(codec, stored bytes)``: compressed only where that pays."""
    if len(data) >= 64:
        if _libdeflate is not None and len(data) >= SMALL_PACK:
            packed = bytes(_libdeflate.zlib_compress(data, LIBDEFLATE_LEVEL))
        else:
            packed = zlib.compress(data, LEVEL)
        if len(packed) <= len(data) * (1 - MIN_SAVING):
            return ZLIB, packed
    return RAW, data


def inflate(codec: int, stored: bytes) -> bytes:
    if codec == ZLIB:
        if _libdeflate is not None:
            try:
                return bytes(_libdeflate.zlib_decompress(stored, len(stored) * INFLATE_GUESS + 1024))
            except _libdeflate.DeflateError:
                pass
        return zlib.decompress(stored)
    if codec == RAW:
        return bytes(stored)
    raise ValueError(f"unknown blob codec {codec}")


def spans(locations: Iterable[Location]) -> list[int]:
    """Locations as the flat reference an event row holds: ``[pack, start, size, ...]``,
    a chunk that follows the previous one in the same pack merged into its span."""
    out: list[int] = []
    for pack, start, size in locations:
        if out and out[-3] == pack and out[-2] + out[-1] == start:
            out[-1] += size
        else:
            out += (pack, start, size)
    return out


def packs_of(reference: list) -> list[int]:
    return reference[0::3]


def packs_of_rows(rows: Iterable[tuple]) -> set[int]:
    """The packs events ``rows`` (their ``data`` last) refer to."""
    found: set[int] = set()
    for row in rows:
        data = row[-1]
        if is_packed(data):
            try:
                references = blob_refs(data)
            except Exception:  # noqa: BLE001 - a damaged row: decoding it names run and seq (DamagedEvent)
                continue
            for reference in references:
                found.update(packs_of(reference))
    return found


class BlobWriter:
    """``put(chunks) -> reference`` inside the caller's write transaction; ``finish()``
    before it commits writes the pack of the new chunks. Lives for one transaction.

    ``known``: chunks committed events of the log refer to, by hash, where they are (the
    caller's cache, e.g. ``located`` of its earlier transactions): not looked up again. Safe
    to keep across transactions because a location never moves and a pack an event refers
    to is never dropped (``vacuum`` drops only packs no event refers to). ``chunks``: the
    same by the chunks' bytes (``chunks`` of earlier transactions): not hashed either."""

    def __init__(self, db: Connection, known: Mapping[bytes, Location] | None = None,
                 chunks: Mapping[bytes, Location] | None = None):
        self._db = db
        self._seen: dict[bytes, Location] = {}
        self._chunks: dict[bytes, Location] = {}
        self._known = known if known is not None else {}
        self._known_chunks = chunks if chunks is not None else {}
        self._pack: int | None = None
        self._parts: list[bytes] = []
        self._size = 0

    def put(self, chunks: list[bytes]) -> list[int]:
        if len(chunks) == 1:  # most values: one chunk, one span
            return list(self._locate(chunks[0]))
        return spans([self._locate(chunk) for chunk in chunks])

    def _locate(self, chunk: bytes) -> Location:
        found = self._chunks.get(chunk) or self._known_chunks.get(chunk)
        if found is not None:
            return found
        key = digest(chunk)
        found = self._seen.get(key) or self._known.get(key)
        if found is None:
            row = self._db.execute(SELECT_LOCATION, (key,)).fetchone()
            if row is None:
                if self._pack is None:
                    self._pack = self._db.execute(NEW_PACK, (b"",)).fetchall()[0][0]
                row = (self._pack, self._size, len(chunk))
                if self._db.execute(INSERT, (key, *row)).rowcount == 1:
                    self._parts.append(chunk)
                    self._size += len(chunk)
                else:
                    row = self._db.execute(SELECT_LOCATION, (key,)).fetchone()
            found = tuple(row)
        self._seen[key] = self._chunks[chunk] = found
        return found

    @property
    def located(self) -> dict[bytes, Location]:
        """The chunks this writer looked up or stored, by hash: where they are."""
        return self._seen

    @property
    def chunks(self) -> dict[bytes, Location]:
        """The chunks this writer hashed, by their bytes: where they are."""
        return self._chunks

    def finish(self) -> None:
        if self._pack is not None:
            self._db.execute(FILL_PACK, (*deflate(b"".join(self._parts)), self._pack))
            self._pack, self._parts, self._size = None, [], 0


class BytesMemo(dict):
    """Something (a reference, a location) by the bytes it is for, holding at most ``limit``
    bytes of keys: emptied when more would come."""

    __slots__ = ("size", "limit")

    def __init__(self, limit: int):
        super().__init__()
        self.size = 0
        self.limit = limit

    def add(self, new: Mapping[bytes, Any]) -> None:
        if new:
            size = sum(map(len, new))
            if self.size + size > self.limit:
                self.clear()
                self.size = 0
            self.update(new)
            self.size += size


class TextMemo:
    """References of values stored apart, by their bytes: a value seen before (a system
    prompt, a response schema, a payload and the answer it was validated from) is not cut
    into chunks and hashed again (``rows.pack``'s ``texts``). ``committed``: values committed
    events refer to, kept by the caller across transactions (safe for the reasons of
    ``BlobWriter``'s ``known``); ``fresh``: this transaction's, for the caller to keep once it
    commits."""

    __slots__ = ("committed", "fresh")

    def __init__(self, committed: Mapping[bytes, list]):
        self.committed = committed
        self.fresh: dict[bytes, list] = {}

    def get(self, data: bytes) -> list | None:
        found = self.committed.get(data)
        return found if found is not None else self.fresh.get(data)

    def __setitem__(self, data: bytes, reference: list) -> None:
        self.fresh[data] = reference


class PackCache:
    """Packs already read (decompressed), by id, bounded by their total size."""

    def __init__(self, limit: int = CACHE_BYTES):
        self.items: dict[int, bytes] = {}
        self._size = 0
        self._limit = limit

    def add(self, pack: int, data: bytes) -> None:
        if self._size + len(data) > self._limit:
            self.items.clear()
            self._size = 0
        self.items[pack] = data
        self._size += len(data)


def join(reference: list, packs: dict[int, bytes]) -> bytes:
    """The bytes a reference names, from ``packs`` (decompressed, by id)."""
    try:
        return b"".join([packs[reference[i]][reference[i + 1]:reference[i + 1] + reference[i + 2]]
                         for i in range(0, len(reference), 3)])
    except KeyError as exc:
        raise MissingBlob(f"pack {exc.args[0]} is missing from the log") from None


def batches(ids: list[int], size: int = 500) -> Iterable[str]:
    for start in range(0, len(ids), size):
        yield json.dumps(ids[start:start + size])


class BlobReader:
    """Resolves references for the decoder, reading each pack once (then from the cache)."""

    def __init__(self, db: Connection, cache: PackCache):
        self._db, self._cache = db, cache
        self._packs = cache.items  # the same dict for the cache's life (it is cleared, never replaced)

    def __call__(self, reference: list) -> bytes:
        packs = self._packs
        if len(reference) == 3:  # one span: the common case, kept short
            pack, start, size = reference
            data = packs.get(pack)
            if data is None:
                data = self._read(pack)
                self._cache.add(pack, data)
            return data[start:start + size]
        for pack in packs_of(reference):
            if pack not in packs:
                self._cache.add(pack, self._read(pack))
        if all(p in packs for p in packs_of(reference)):
            return join(reference, packs)
        # The cache was cleared while this reference's packs were read: read them apart.
        return join(reference, {p: self._read(p) for p in packs_of(reference)})

    def _read(self, pack: int) -> bytes:
        row = self._db.execute(SELECT_PACK, (pack,)).fetchone()
        if row is None:
            raise MissingBlob(f"pack {pack} is missing from the log")
        return inflate(*row)
