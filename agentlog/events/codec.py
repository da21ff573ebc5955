"""Turns events into stored bytes and back; upcasts older versions on read.

Encoders and decoders are built once. An event of an older version is decoded to a
dict, passed through the chain of upcasters ``(type, v) -> v+1``, then converted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import msgspec

from . import packed
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


def pack(event: Event, put: packed.Put) -> tuple[str, int, bytes]:
    """Return ``(type, version, data)`` for storage in the compact row format.

    ``put(chunks) -> references`` stores the chunks of a large text (the store's blob tables).
    """
    if not isinstance(event, Event):
        raise TypeError(f"not an agentlog event: {event!r}")
    cls = type(event)
    return cls.__name__, cls.VERSION, packed.pack(event, put)


def decode(
    type_name: str, version: int, data: bytes | str, resolve: packed.Resolve | packed.Unpacker | None = None
) -> Event:
    """The event stored as ``data``: JSON (``encode``) or packed (``pack``), whose stored
    text ``resolve(references)`` returns (``packed.blob_refs(data)`` lists them; a reader of
    many rows passes a ``packed.Unpacker`` built once around its resolver)."""
    if type(data) is bytes and data[:1] != b"{" and data:  # packed (packed.is_packed, inlined)
        if type(resolve) is packed.Unpacker:
            # A store reading its rows: the current version, kept short (replay's hot path).
            cls = EVENT_TYPES.get(type_name)
            if cls is not None and version == cls.VERSION:
                try:
                    raw = resolve.decode(data)
                    if type(raw) is dict:
                        raw["type"] = type_name
                        return msgspec.convert(raw, cls)
                except (packed.MissingBlob, msgspec.DecodeError, ValueError, TypeError):
                    pass  # damaged: the long way below says how
        return _decode_packed(type_name, version, data, resolve or _no_text)
    if packed.is_packed(data):
        return _decode_packed(type_name, version, data, resolve or _no_text)
    cls = EVENT_TYPES.get(type_name)
    if cls is None:
        raise CodecError(f"unknown event type {type_name!r} (written by a newer agentlog?)")
    if version == cls.VERSION:
        try:
            return _decoders[type_name].decode(data)
        except msgspec.DecodeError as exc:  # malformed JSON too, not only invalid fields
            raise CodecError(f"{type_name} v{version}: {exc}") from exc
    if version > cls.VERSION:
        raise CodecError(
            f"{type_name} v{version} is newer than this agentlog understands (v{cls.VERSION}); upgrade agentlog"
        )
    try:
        raw = _raw.decode(data)
        for v in range(version, cls.VERSION):
            upcast = UPCASTERS.get((type_name, v))
            if upcast is None:
                raise CodecError(f"no upcaster for {type_name} v{v} -> v{v + 1}")
            raw = upcast(raw)
    except (msgspec.DecodeError, KeyError, TypeError, ValueError) as exc:
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


def _decode_packed(type_name: str, version: int, data: bytes, resolve: packed.Resolve | packed.Unpacker) -> Event:
    cls = EVENT_TYPES.get(type_name)
    if cls is None:
        raise CodecError(f"unknown event type {type_name!r} (written by a newer agentlog?)")
    if version > cls.VERSION:
        raise CodecError(
            f"{type_name} v{version} is newer than this agentlog understands (v{cls.VERSION}); upgrade agentlog"
        )
    try:
        raw = packed.unpack(data, resolve)
    except packed.MissingBlob as exc:
        raise CodecError(f"{type_name} v{version}: {exc.args[0]}") from exc
    except (msgspec.DecodeError, ValueError, TypeError) as exc:
        raise CodecError(f"{type_name} v{version}: {exc}") from exc
    if not isinstance(raw, dict):
        raise CodecError(f"{type_name} v{version}: not an event")
    try:
        for v in range(version, cls.VERSION):
            upcast = UPCASTERS.get((type_name, v))
            if upcast is None:
                raise CodecError(f"no upcaster for {type_name} v{v} -> v{v + 1}")
            raw = upcast(raw)
    except (KeyError, TypeError, ValueError) as exc:
        raise CodecError(f"{type_name} v{version}: cannot upcast stored data ({exc!r})") from exc
    return _convert(raw, cls, type_name, version)


def to_builtins(event: Event) -> dict[str, Any]:
    """The event as plain JSON-ready data, with its ``type``."""
    return msgspec.to_builtins(event)


def request_hash(request: dict[str, Any]) -> str:
    """Fingerprint of a completion request: sha256 over its canonical (key-sorted) JSON."""
    return hashlib.sha256(_canonical.encode(request)).hexdigest()
