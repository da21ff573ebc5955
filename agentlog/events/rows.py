"""The row format since schema 9: the event's own MessagePack, its large values kept apart.

A row is the MessagePack array ``[piece, reference, piece, ..., piece]``. Joined, with each
reference replaced by the bytes it names, the pieces are the event as a MessagePack
*array* of its fields, in the order pinned in ``FIELDS`` (no field names; no type tag: the
row's ``type`` column holds it; trailing fields left at their default are left out). A
reference is what ``put`` returned for a value's chunks (the store's: ``[pack, start,
size, ...]`` spans); one of three integers (one span) is written as those integers, inline.

- A string of ``TEXT_MIN`` characters or more is stored apart as its UTF-8 bytes, cut into
  content-defined chunks (``packed.chunks``); its MessagePack header ends the piece before.
- A payload (findings, a review) is its JSON, as a ``bin``: in the row when short, else
  stored apart (its ``bin`` header in the piece before). It is the JSON of the answer it
  was validated from, so the two are stored once.
- Any other value with no such string whose MessagePack is ``VALUE_MIN`` bytes or more (a
  response schema, the agents' configs, tool specs) is stored apart as its MessagePack.

So the same draft, findings block or system prompt quoted in many events and runs is
stored once, as in the packed rows of schemas 4-8 (``packed``).

Reading a row is one join and one typed decode, straight into the event's class: no plain
data, no conversion (``Reader.stored``, the store's hot path). Each event class has a
*row class*, a subclass that differs only in being encoded as an array (``array_like``, no
tag; payloads as ``bytes``); the decoded instance is then given its event class back
(``__class__``: the two have the same fields and layout) and its payloads decoded from
their JSON, so every reader gets the event type itself, as JSON rows gave it.

Evolution: a field is only ever added at the end of an event class, with a default, and
appended to its tuple in ``FIELDS``; a row written before then has fewer fields and decodes
with the default (an older release ignores the extra ones, as it ignored an unknown key).
A change a default cannot express bumps the event's ``VERSION``; the fields of the version
it replaces stay in ``FIELDS``, so its rows decode to named data for the upcasters.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import msgspec

from .packed import MissingBlob, Put, Resolve, Texts, Unpacker, chunks
from .payloads import Findings, Review
from .types import EVENT_TYPES, Event

T = TypeVar("T")

TEXT_MIN = 128  # characters: a string this long is stored apart
VALUE_MIN = 128  # bytes: a payload or a text-free container this large is stored apart
TEXT, JSON, VALUE = 0, 1, 2  # what a stored value is: UTF-8 text, a payload's JSON, MessagePack

# The stored order of every event type's fields, by (type, version). Append only.
FIELDS: dict[tuple[str, int], tuple[str, ...]] = {
    ("RunStarted", 2): ("task", "pipeline", "agents", "max_iterations", "threshold", "parent_run_id", "research",
                        "tools", "approval", "budget_usd", "budget_tokens", "sample"),
    ("RunForked", 1): ("parent_run_id", "parent_seq"),
    ("RunResumed", 1): ("previous_seq",),
    ("RunQueued", 1): (),
    ("RunClaimed", 1): ("worker", "previous_seq"),
    ("AgentReconfigured", 1): ("agent", "model", "temperature", "system_prompt", "max_tokens"),
    ("SettingsChanged", 1): ("max_iterations", "threshold", "approval", "budget_usd", "budget_tokens", "sample"),
    ("RunFinished", 1): ("reason", "iterations", "score"),
    ("RunFailed", 1): ("reason", "step", "retryable"),
    ("BudgetReached", 1): ("budget", "limit", "spent", "call_id", "scope"),
    ("SweepMember", 1): ("sweep_id", "spec", "variant", "sample", "parent_run_id", "task_index"),
    ("LLMCallRequested", 1): ("call_id", "agent", "step", "attempt", "request", "request_hash", "round"),
    ("LLMCallAnswered", 1): ("call_id", "agent", "request_hash", "content", "tool_calls", "usage", "latency_ms",
                             "model", "reused_from"),
    ("LLMCallFailed", 1): ("call_id", "agent", "attempt", "error_kind", "message", "retryable", "gave_up"),
    ("OutputRejected", 1): ("call_id", "agent", "step", "reason"),
    ("ToolInvoked", 1): ("call_id", "tool_call_id", "name", "arguments"),
    ("ToolReturned", 1): ("call_id", "tool_call_id", "name", "result", "is_error", "reused_from"),
    ("ResearchPartReady", 1): ("part", "findings", "call_id"),
    ("FindingsReady", 1): ("findings", "call_id"),
    ("DraftReady", 1): ("iteration", "draft", "call_id", "source"),
    ("ReviewScored", 1): ("iteration", "review", "call_id"),
    ("ApprovalRequested", 1): ("iteration", "point"),
    ("ApprovalDecided", 1): ("iteration", "decision", "by", "note", "draft"),
}


# Payloads are stored as their JSON (a bin in the row, or a stored value): the JSON of the
# answer they were validated from, so the two are stored once.
PAYLOADS = (Findings, Review)


def _payload_fields(cls: type[Event]) -> tuple[str, ...]:
    return tuple(f.name for f in msgspec.structs.fields(cls) if f.type in PAYLOADS)


def _row_class(cls: type[Event]) -> type[Event]:
    namespace = {"__module__": __name__, "__annotations__": {name: bytes for name in _payload_fields(cls)}}
    row_class = type(cls)(f"{cls.__name__}Row", (cls,), namespace, array_like=True, tag=False)
    if row_class.__struct_fields__ != cls.__struct_fields__:  # a field declared again may move
        raise TypeError(f"{cls.__name__}: its row class would store its fields in another order")
    return row_class


ROW_CLASSES: dict[str, type[Event]] = {name: _row_class(cls) for name, cls in EVENT_TYPES.items()}

_set_class = object.__dict__["__class__"].__set__  # a row-class instance becomes its event class
_force = msgspec.structs.force_setattr
_encoder = msgspec.msgpack.Encoder()
_json = msgspec.json.Encoder()
_json_value = msgspec.json.Decoder()
_row = msgspec.msgpack.Decoder()  # the row itself: [piece, reference, piece, ...]
_values = msgspec.msgpack.Decoder()  # an event's MessagePack, untyped: an event of an older version
_typed = {name: msgspec.msgpack.Decoder(cls) for name, cls in ROW_CLASSES.items()}
# For the types with payloads: each payload field and the decoder of its JSON.
_payloads = {
    name: tuple((field, msgspec.json.Decoder(f.type).decode) for f in msgspec.structs.fields(cls)
                if (field := f.name) in _payload_fields(cls))
    for name, cls in EVENT_TYPES.items() if _payload_fields(cls)
}


class _Layout:
    """What writing an event of one class needs: its fields, their defaults as plain data,
    its payload fields."""

    __slots__ = ("fields", "defaults", "payloads")

    def __init__(self, cls: type[Event]):
        self.fields = cls.__struct_fields__
        self.defaults: dict[str, Any] = {}
        for field in msgspec.structs.fields(cls):
            if field.default is not msgspec.NODEFAULT:
                self.defaults[field.name] = msgspec.to_builtins(field.default)
            elif field.default_factory is not msgspec.NODEFAULT:
                self.defaults[field.name] = msgspec.to_builtins(field.default_factory())
        self.payloads = frozenset(_payload_fields(cls))


@functools.cache
def _layout(cls: type[Event]) -> _Layout:
    return _Layout(cls)


_marker = msgspec.Raw(b"\xc1" + os.urandom(15))  # 0xc1: a byte MessagePack never uses


# MessagePack shorter than this holds no string of TEXT_MIN characters (a string takes at
# least a byte per character) and is not stored apart.
_SHORT = min(TEXT_MIN, VALUE_MIN)


def _maybe_long(data: bytes) -> bool:
    """Whether MessagePack ``data`` may hold a string of TEXT_MIN (<= 128) characters or more:
    only after a str8 header with a size of 128 bytes or more, or a str16 or str32 header.
    Byte searches in C that rule most containers out at once; after a match, the parts that
    hold no such string are found by cutting the container's values."""
    if data.find(b"\xda") >= 0 or data.find(b"\xdb") >= 0:  # not ``in``, which tries an int first (an error raised and cleared)
        return True
    at = data.find(b"\xd9")
    while at >= 0:
        if data[at + 1:at + 2] >= b"\x80":
            return True
        at = data.find(b"\xd9", at + 1)
    return False


def _cut(value: Any, holes: list[tuple[int, bytes]]) -> Any:
    """``value`` (plain data) with its large parts replaced by the marker, noted in ``holes``
    as ``(kind, bytes)``."""
    kind = type(value)
    if kind is str:
        if len(value) >= TEXT_MIN:
            holes.append((TEXT, value.encode()))
            return _marker
        return value
    if kind is dict or kind is list:
        return _cut_container(value, kind is dict, holes)
    return value


def _cut_container(value: Any, is_dict: bool, holes: list[tuple[int, bytes]]) -> Any:
    """``_cut`` of a dict or list: the value itself when short; its parts, cut, when it holds
    a string of TEXT_MIN characters (each part as ``_cut`` would make it, the scalars done
    here: this runs for every container on the way to a long string); else, when large,
    the marker, its MessagePack a hole of its own."""
    data = _encoder.encode(value)
    if len(data) < _SHORT:
        return value
    if _maybe_long(data):  # perhaps long text inside: cut the parts that hold it
        mark = len(holes)
        text = False
        parts: Any = {} if is_dict else []
        for key, part in (value.items() if is_dict else enumerate(value)):
            kind = type(part)
            if kind is str:
                if len(part) >= TEXT_MIN:
                    holes.append((TEXT, part.encode()))
                    part, text = _marker, True
            elif kind is dict or kind is list:
                cut = _cut_container(part, kind is dict, holes)
                if cut is not part:
                    text = text or cut is not _marker  # a container comes back cut only if it holds text
                    part = cut
            if is_dict:
                parts[key] = part
            else:
                parts.append(part)
        if text:
            return parts
        del holes[mark:]  # none after all: the value is text-free, taken whole
    if len(data) >= VALUE_MIN:
        holes.append((VALUE, data))
        return _marker
    return value


def _payload(value: Any, holes: list[tuple[int, bytes]]) -> Any:
    """A payload (plain data) as its JSON: a bin in the row, or stored apart when large."""
    data = _json.encode(value)
    if len(data) >= VALUE_MIN:
        holes.append((JSON, data))
        return _marker
    return data


def _header(kind: int, size: int) -> bytes:
    """The MessagePack header a stored value of ``kind`` and ``size`` bytes is spliced in after."""
    if kind == VALUE:
        return b""
    if size < 256:
        return (b"\xd9" if kind == TEXT else b"\xc4") + size.to_bytes(1, "big")
    if size < 65536:
        return (b"\xda" if kind == TEXT else b"\xc5") + size.to_bytes(2, "big")
    return (b"\xdb" if kind == TEXT else b"\xc6") + size.to_bytes(4, "big")


def pack(event: Event, put: Put, texts: Texts | None = None) -> bytes:
    """The event's row; ``put(chunks)`` stores the chunks of one large value and returns their
    reference (a list of integers >= 0). ``texts`` (optional, the caller's): references of
    values stored before, by their bytes, so that a value seen before is not cut and put
    again; each value put is noted in it."""
    global _marker
    layout = _layout(type(event))
    plain = msgspec.to_builtins(event)  # leaves out fields at their default
    fields = layout.fields
    last = len(fields)
    while last and fields[last - 1] not in plain:
        last -= 1
    holes: list[tuple[int, bytes]] = []
    values = []
    defaults, payloads = layout.defaults, layout.payloads
    for name in fields[:last]:
        value = plain[name] if name in plain else defaults[name]
        kind = type(value)
        if name in payloads:
            value = _payload(value, holes)
        elif kind is str:
            if len(value) >= TEXT_MIN:
                holes.append((TEXT, value.encode()))
                value = _marker
        elif kind is dict or kind is list:
            value = _cut_container(value, kind is dict, holes)
        values.append(value)
    body = _encoder.encode(values)
    if not holes:
        return _encoder.encode((body,))
    pieces = body.split(_marker)
    if len(pieces) != len(holes) + 1:  # the marker's 16 random bytes occur in the event itself: another marker
        _marker = msgspec.Raw(b"\xc1" + os.urandom(15))
        return pack(event, put, texts)
    row: list[Any] = [pieces[0]]
    for (kind, data), after in zip(holes, pieces[1:]):
        row[-1] += _header(kind, len(data))
        reference = texts.get(data) if texts is not None else None
        if reference is None:
            reference = put(chunks(data))
            if texts is not None:
                texts[data] = reference
        if len(reference) == 3:  # one span: its three integers in the row itself
            row += reference
        else:
            row.append(reference)
        row.append(after)
    return _encoder.encode(row)


def is_row(data: Any) -> bool:
    """Rows of this format are MessagePack arrays (fixarray, array16, or array32 for a row of
    65,536 parts or more: ~16,384 values stored apart); the packed rows before them are maps,
    and JSON rows text (``{``), so the first byte tells them apart."""
    return type(data) is bytes and bool(data) and (0x91 <= data[0] <= 0x9F or 0xDC <= data[0] <= 0xDD)


def _split(parts: list) -> tuple[list[bytes], list[list]]:
    """A row's pieces and its references (a one-span reference is three integers in the row)."""
    pieces, references = [parts[0]], []
    i = 1
    while i < len(parts):
        if type(parts[i]) is int:
            references.append(parts[i:i + 3])
            i += 3
        else:
            references.append(parts[i])
            i += 1
        pieces.append(parts[i])
        i += 1
    return pieces, references


def references(data: bytes) -> list[list]:
    """The references a row holds, one per stored value."""
    return _split(_row.decode(data))[1]


class Reader:
    """Decodes rows to events, reading stored values with ``resolve``; ``packed`` decodes
    the packed rows written before this format, with the same ``resolve``.

    Build one per resolver and keep it. ``buffers`` (optional, e.g. a store's cache of the
    packs it has read) short-cuts the common case: a one-span reference ``[key, start, size]``
    whose ``key`` is in ``buffers`` is ``buffers[key][start:start + size]``; anything else
    goes to ``resolve``.
    """

    __slots__ = ("stored", "body", "packed", "__weakref__")

    def __init__(self, resolve: Resolve, buffers: Mapping[int, bytes] | None = None):
        held = buffers if buffers is not None else {}
        row_decode = _row.decode

        def splice(parts: list) -> bytes:
            """The pieces of a row joined, each reference replaced by the bytes it names."""
            pieces, references = _split(parts)
            out = [pieces[0]]
            for reference, piece in zip(references, pieces[1:]):
                try:  # spans [key, start, size, ...] of buffers at hand
                    out.append(b"".join([held[reference[k]][reference[k + 1]:reference[k + 1] + reference[k + 2]]
                                         for k in range(0, len(reference), 3)]))
                except (KeyError, TypeError, IndexError):
                    out.append(resolve(reference))
                out.append(piece)
            return b"".join(out)

        def body(data: bytes) -> bytes:
            """The event's MessagePack: the row's pieces with every stored value spliced back in."""
            parts = row_decode(data)
            return parts[0] if len(parts) == 1 else splice(parts)

        # By type: its version, the decoder of its row class, its event class, its payload fields (or None).
        kinds = {name: (cls.VERSION, _typed[name].decode, cls, _payloads.get(name))
                 for name, cls in EVENT_TYPES.items()}
        force = _force
        set_class = _set_class
        damaged = (MissingBlob, msgspec.DecodeError, ValueError, TypeError, IndexError, KeyError)

        def stored(run_id: str, rows: Iterable[tuple], make: Callable[..., T],
                   other: Callable[[str, tuple], T]) -> list[T]:
            """``make(run_id, seq, type, version, recorded_at, event)`` for each of ``rows`` of the
            run (``(seq, type, version, recorded_at, data)``): replay's hot path, kept short. A
            row of another format or version, or a damaged one, is ``other(run_id, row)``."""
            out = []
            append = out.append
            for row in rows:
                seq, type_name, version, recorded_at, data = row
                kind = kinds.get(type_name)
                if kind is not None and kind[0] == version and type(data) is bytes:
                    try:
                        first = data[0]
                        if 0x91 <= first <= 0x9F or 0xDC <= first <= 0xDD:  # a row (is_row, inlined)
                            parts = row_decode(data)
                            if len(parts) == 1:
                                body = parts[0]
                            elif len(parts) == 5 and type(key := parts[1]) is int and (pack := held.get(key)):
                                start = parts[2]  # one value in one span of a pack at hand: the common case
                                body = b"".join((parts[0], pack[start:start + parts[3]], parts[4]))
                            else:
                                body = splice(parts)
                            _, decode, cls, payloads = kind
                            event = decode(body)
                            if payloads is not None:
                                for name, decode_payload in payloads:
                                    force(event, name, decode_payload(getattr(event, name)))
                            set_class(event, cls)
                            append(make(run_id, seq, type_name, version, recorded_at, event))
                            continue
                    except damaged:
                        pass  # the long way says what is wrong
                append(other(run_id, row))
            return out

        self.stored = stored
        self.body: Callable[[bytes], bytes] = body
        self.packed = Unpacker(resolve, buffers)


def typed(type_name: str, body: bytes) -> Event:
    """The event of the current version of ``type_name`` whose MessagePack (spliced) is ``body``."""
    decoded = _typed[type_name].decode(body)
    for name, decode in _payloads.get(type_name, ()):
        _force(decoded, name, decode(getattr(decoded, name)))
    _set_class(decoded, EVENT_TYPES[type_name])
    return decoded


def named(type_name: str, version: int, body: bytes) -> dict[str, Any]:
    """The fields of a spliced row of an older version, by name, as plain data (for the upcasters)."""
    names = FIELDS.get((type_name, version))
    if names is None:
        raise ValueError(f"no stored field order for {type_name} v{version}")
    values = _values.decode(body)
    if type(values) is not list:
        raise ValueError("not an event")
    raw = dict(zip(names, values))
    for name in _payload_fields(EVENT_TYPES[type_name]):
        if type(raw.get(name)) is bytes:
            raw[name] = _json_value.decode(raw[name])
    return raw


__all__ = ["FIELDS", "ROW_CLASSES", "MissingBlob", "Reader", "is_row", "named", "pack", "references", "typed"]
