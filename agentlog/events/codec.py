"""Turns events into stored bytes and back; upcasts older versions on read.

Encoders and decoders are built once. An event of an older version is decoded to a
dict, passed through the chain of upcasters ``(type, v) -> v+1``, then converted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import msgspec

from . import packed, rows
from .types import EVENT_TYPES, Event


class CodecError(Exception):
    """Stored bytes that this release cannot turn into an event."""


Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

# Seed defaults for v1 RunStarted, which named one model for every agent.
_V1_TEMPERATURES = {"researcher": 0.2, "writer": 0.6, "reviewer": 0.1}


def _run_started_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    model = data.pop("model")
    data["agents"] = {
        name: {"model": model, "temperature": t} for name, t in _V1_TEMPERATURES.items()
    }
    return data


UPCASTERS: dict[tuple[str, int], Upcaster] = {
    ("RunStarted", 1): _run_started_v1_to_v2,
}

_encoder = msgspec.json.Encoder()
_canonical = msgspec.json.Encoder(order="sorted")
_decoders = {name: msgspec.json.Decoder(cls) for name, cls in EVENT_TYPES.items()}
_raw = msgspec.json.Decoder(dict[str, Any])


def encode(event: Event) -> tuple[str, int, bytes]:
    """Return ``(type, version, data)`` for storage."""
    if not isinstance(event, Event):
        raise TypeError(f"not an agentlog event: {event!r}")
    cls = type(event)
    return cls.__name__, cls.VERSION, _encoder.encode(event)


def pack(event: Event, put: packed.Put, texts: packed.Texts | None = None) -> tuple[str, int, bytes]:
    """Return ``(type, version, data)`` for storage in the row format (``rows``).

    ``put(chunks) -> reference`` stores the chunks of a large value (the store's blob tables);
    ``texts``: the values stored before, by their bytes (``rows.pack``).
    """
    cls = type(event)
    if EVENT_TYPES.get(cls.__name__) is not cls and not isinstance(event, Event):  # the first test is faster
        raise TypeError(f"not an agentlog event: {event!r}")
    return cls.__name__, cls.VERSION, rows.pack(event, put, texts)


Source = packed.Resolve | rows.Reader


def decode(type_name: str, version: int, data: bytes | str, resolve: Source | None = None) -> Event:
    """The event stored as ``data``: JSON (``encode``), a row (``pack``) or a packed row of
    schemas 4-8, whose stored text ``resolve(reference)`` returns (``blob_refs(data)`` lists
    the references; a reader of many rows uses ``rows.Reader.stored``, or passes a
    ``rows.Reader`` built once around its resolver)."""
    if type(data) is bytes and data:
        first = data[0]
        if 0x91 <= first <= 0x9F or 0xDC <= first <= 0xDD:  # a row (rows.is_row, inlined)
            return _decode_row(type_name, version, data, _reader(resolve))
        if first != 0x7B:  # b"{": a packed row (packed.is_packed)
            return _decode_packed(type_name, version, data, _reader(resolve).packed)
    cls = EVENT_TYPES.get(type_name)
    if cls is None:
        raise CodecError(f"unknown event type {type_name!r} (written by a newer agentlog?)")
    if version == cls.VERSION:
        try:
            return _decoders[type_name].decode(data)
        except msgspec.DecodeError as exc:  # malformed JSON too, not only invalid fields
            raise CodecError(f"{type_name} v{version}: {exc}") from exc
    _check_version(cls, type_name, version)
    try:
        raw = _raw.decode(data)
    except msgspec.DecodeError as exc:
        raise CodecError(f"{type_name} v{version}: cannot upcast stored data ({exc!r})") from exc
    return _upcast(raw, cls, type_name, version)


def _reader(resolve: Source | None) -> rows.Reader:
    if type(resolve) is rows.Reader:
        return resolve
    return rows.Reader(resolve or _no_text)


def _check_version(cls: type[Event] | None, type_name: str, version: int) -> type[Event]:
    if cls is None:
        raise CodecError(f"unknown event type {type_name!r} (written by a newer agentlog?)")
    if version > cls.VERSION:
        raise CodecError(
            f"{type_name} v{version} is newer than this agentlog understands (v{cls.VERSION}); upgrade agentlog"
        )
    return cls


def _upcast(raw: dict[str, Any], cls: type[Event], type_name: str, version: int) -> Event:
    try:
        for v in range(version, cls.VERSION):
            upcast = UPCASTERS.get((type_name, v))
            if upcast is None:
                raise CodecError(f"no upcaster for {type_name} v{v} -> v{v + 1}")
            raw = upcast(raw)
    except (KeyError, TypeError, ValueError) as exc:
        raise CodecError(f"{type_name} v{version}: cannot upcast stored data ({exc!r})") from exc
    return _convert(raw, cls, type_name, version)


def _convert(raw: dict[str, Any], cls: type[Event], type_name: str, version: int) -> Event:
    raw["type"] = type_name
    try:
        return msgspec.convert(raw, cls)
    except msgspec.ValidationError as exc:
        if version == cls.VERSION:
            raise CodecError(f"{type_name} v{version}: {exc}") from exc
        raise CodecError(f"{type_name} v{version} upcast to v{cls.VERSION}: {exc}") from exc


def _no_text(references: list) -> bytes:
    raise packed.MissingBlob(f"no store to read the text at {references} from")


def _decode_row(type_name: str, version: int, data: bytes, reader: rows.Reader) -> Event:
    cls = _check_version(EVENT_TYPES.get(type_name), type_name, version)
    try:
        body = reader.body(data)
    except packed.MissingBlob as exc:
        raise CodecError(f"{type_name} v{version}: {exc.args[0]}") from exc
    except (msgspec.DecodeError, ValueError, TypeError, IndexError, KeyError) as exc:
        raise CodecError(f"{type_name} v{version}: not a stored row ({exc!r})") from exc
    if version == cls.VERSION:
        try:
            return rows.typed(type_name, body)
        except msgspec.DecodeError as exc:  # a field of the wrong type too
            raise CodecError(f"{type_name} v{version}: {exc}") from exc
    try:
        raw = rows.named(type_name, version, body)
    except (msgspec.DecodeError, ValueError) as exc:
        raise CodecError(f"{type_name} v{version}: {exc}") from exc
    return _upcast(raw, cls, type_name, version)


def _decode_packed(type_name: str, version: int, data: bytes, unpacker: packed.Unpacker) -> Event:
    cls = _check_version(EVENT_TYPES.get(type_name), type_name, version)
    try:
        raw = unpacker.decode(data)
    except packed.MissingBlob as exc:
        raise CodecError(f"{type_name} v{version}: {exc.args[0]}") from exc
    except (msgspec.DecodeError, ValueError, TypeError) as exc:
        raise CodecError(f"{type_name} v{version}: {exc}") from exc
    if not isinstance(raw, dict):
        raise CodecError(f"{type_name} v{version}: not an event")
    return _upcast(raw, cls, type_name, version)


def blob_refs(data: bytes | str) -> list[list]:
    """The references to stored text a row holds (none in a JSON row), one per stored value."""
    if rows.is_row(data):
        return rows.references(data)
    if packed.is_packed(data):
        return packed.blob_refs(data)
    return []


def to_builtins(event: Event) -> dict[str, Any]:
    """The event as plain JSON-ready data, with its ``type``."""
    return msgspec.to_builtins(event)


def request_hash(request: dict[str, Any]) -> str:
    """Fingerprint of a completion request: sha256 over its canonical (key-sorted) JSON."""
    return hashlib.sha256(_canonical.encode(request)).hexdigest()
