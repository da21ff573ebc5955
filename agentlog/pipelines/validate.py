"""Turning a model's text into a validated payload, or a reason it is not one."""

from __future__ import annotations

import re
from typing import TypeVar

import msgspec

T = TypeVar("T")

_FENCE = re.compile(r"^\s*```[\w-]*\s*\n(.*?)\n?```\s*$", re.S)


def strip_fences(text: str) -> str:
    """The body of a reply wrapped in a Markdown code fence, else the reply itself."""
    match = _FENCE.match(text)
    return match.group(1) if match else text.strip()


def parse_json(text: str, cls: type[T]) -> T | str:
    """A ``cls`` decoded from ``text`` (fences stripped), or the reason it is not valid."""
    body = strip_fences(text)
    if not body:
        return "the reply was empty"
    try:
        return msgspec.json.decode(body.encode(), type=cls)
    except msgspec.ValidationError as exc:
        return f"the JSON does not match the {cls.__name__} schema: {exc}"
    except msgspec.DecodeError as exc:
        return f"the reply is not valid JSON: {exc}"


def parse_markdown(text: str) -> str | None:
    """A draft is any non-empty Markdown; a reply wrapped whole in a fence is unwrapped."""
    body = strip_fences(text) if text.lstrip().startswith("```") else text.strip()
    return body or None
