"""The packed rows of schemas 4-8 (read, never written since), and the chunking of large text.

A packed row is the MessagePack map of an event's plain data, except that

- a string of 128 characters or more became ``Ext(TEXT, reference)``: its UTF-8 bytes,
  cut into content-defined chunks, each chunk stored once per log;
- a nested value with no such string whose JSON was 128 bytes or more (a findings block,
  a review, a response schema, a tool spec) became ``Ext(JSON, reference)``: its JSON,
  chunked the same way.

Rows are written in the format of ``rows`` now, which cuts large values into the same
chunks. Chunks are cut at line ends chosen by the content itself (as in content-defined
chunking), so the same findings block or draft quoted inside different prompts yields the
same chunks, and is stored once. Where the chunks live is the caller's business:
``put(chunks)`` stores them and returns a reference (plain data, e.g. where each chunk
is), ``resolve(reference)`` gives the bytes back. No SQL here.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import msgspec

TEXT = 1  # ext code: a string, the concatenation of its chunks
JSON = 2  # ext code: a JSON value, the concatenation of its chunks

CHUNK_MIN = 256  # no cut before a chunk holds this many bytes
CHUNK_MAX = 8192  # a longer line is cut at this length
CUT_MASK = 3  # after CHUNK_MIN bytes, cut after a line whose crc32 & CUT_MASK == 0
LONG_LINE = 160  # and always after a line this long (a paragraph)

Put = Callable[[list[bytes]], list]


class Texts(Protocol):
    """References of values stored before, by their bytes (``rows.pack``'s ``texts``)."""

    def get(self, data: bytes, /) -> list | None: ...

    def __setitem__(self, data: bytes, reference: list, /) -> None: ...
Resolve = Callable[[list], bytes]

_json_value = msgspec.json.Decoder()
_refs_decoder = msgspec.msgpack.Decoder(list)


def chunks(data: bytes) -> list[bytes]:
    """``data`` cut into chunks whose boundaries depend only on nearby content."""
    if len(data) < LONG_LINE:  # no line long enough to cut after, no chunk past CHUNK_MIN
        return [data] if data else []
    lines = data.splitlines(keepends=True)
    if len(lines) == 1 and len(data) <= CHUNK_MAX:  # one line: cut after it, at the end
        return [data]
    out: list[bytes] = []
    crc32 = zlib.crc32
    start = end = 0  # the chunk so far is data[start:end]: sliced once, when cut
    for line in lines:
        size = len(line)
        if size > CHUNK_MAX:  # one very long line (compact JSON): fixed cuts
            return _chunks_long(data)
        end += size
        # The cut depends on the line alone (not on where the chunk began), so two texts
        # quoting the same block fall into step at its first chosen line past CHUNK_MIN.
        if size >= LONG_LINE or end - start >= CHUNK_MAX or (
            end - start >= CHUNK_MIN and not crc32(line) & CUT_MASK and line.strip()
        ):
            out.append(data[start:end])
            start = end
    if start < end:
        out.append(data[start:])
    return out


def _chunks_long(data: bytes) -> list[bytes]:
    """``chunks`` of text with a line longer than CHUNK_MAX: the same cuts, such a line cut
    every CHUNK_MAX bytes of the chunk it falls in."""
    out: list[bytes] = []
    current = bytearray()
    for line in data.splitlines(keepends=True):
        while len(line) > CHUNK_MAX:
            room = CHUNK_MAX - len(current)
            current += line[:room]
            line = line[room:]
            out.append(bytes(current))
            current.clear()
        current += line
        if len(current) >= CHUNK_MAX or len(line) >= LONG_LINE or (
            len(current) >= CHUNK_MIN and line.strip() and zlib.crc32(line) & CUT_MASK == 0
        ):
            out.append(bytes(current))
            current.clear()
    if current:
        out.append(bytes(current))
    return out


class MissingBlob(KeyError):
    """A row refers to stored text the log does not hold."""


_local = threading.local()  # what blob_refs collects, for the decoder's ext hook


def _collect(code: int, ext: memoryview) -> None:
    _local.found.append(_refs_decoder.decode(ext))


_collector = msgspec.msgpack.Decoder(ext_hook=_collect)


def blob_refs(data: bytes) -> list[list]:
    """The references a packed row holds, one list per moved-out value."""
    _local.found = found = []
    try:
        _collector.decode(data)
    finally:
        _local.found = None
    return found


class Unpacker:
    """Decodes packed rows to plain data, resolving references with ``resolve``.

    Build one per resolver and keep it: it holds a MessagePack decoder bound to it.
    ``buffers`` (optional, e.g. a store's cache of what it has read) short-cuts the common
    case inside the decoder's hook: a reference ``[key, start, size]`` whose ``key`` is in
    ``buffers`` is ``buffers[key][start:start + size]``; anything else goes to ``resolve``.
    """

    __slots__ = ("decode", "__weakref__")

    def __init__(self, resolve: Resolve, buffers: Mapping[int, bytes] | None = None):
        refs = _refs_decoder.decode
        text = TEXT
        json_value = _json_value.decode
        held = buffers if buffers is not None else {}

        def hook(code: int, ext: memoryview) -> Any:
            reference = refs(ext)
            data = held.get(reference[0]) if len(reference) == 3 else None
            if data is None:
                joined = resolve(reference)
            else:
                start = reference[1]
                joined = data[start:start + reference[2]]
            if code == text:
                return joined.decode()
            if code == JSON:
                return json_value(joined)
            raise ValueError(f"unknown reference kind {code}")

        self.decode = msgspec.msgpack.Decoder(ext_hook=hook).decode


def is_packed(data: bytes | str) -> bool:
    """Stored as MessagePack (a packed row, or a row of ``rows``); rows written before are JSON text."""
    return isinstance(data, bytes) and bool(data) and data[:1] != b"{"
