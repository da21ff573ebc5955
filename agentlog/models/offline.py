"""The offline model: no key, no network, deterministic, schema-valid outputs.

It is a stand-in for demos and tests, not a language model: its text is assembled from
the request, and every answer says so. The reviewer scores 6, then one point more per
earlier review it is shown, so a default run shows the write/review loop converge.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import msgspec

from agentlog.events import AreaFacts, Findings, Review

from .types import Completion

LABEL = "offline model (deterministic stand-in, not a language model)"
_ANGLES = ("core concepts", "how it works", "configuration", "failure modes", "trade-offs", "history")


def _task(messages: list[dict[str, Any]]) -> str:
    for m in messages:
        if m.get("role") == "user":
            found = re.search(r"^Task: (.+)$", str(m.get("content", "")), re.M)
            if found:
                return found.group(1).strip()
    return "the task"


def _pick(seed: str, items: tuple[str, ...], k: int) -> list[str]:
    digest = hashlib.sha256(seed.encode()).digest()
    order = sorted(range(len(items)), key=lambda i: digest[i])
    return [items[i] for i in order[:k]]


def _findings(task: str) -> Findings:
    areas = _pick(task, _ANGLES, 3)
    return Findings(
        key_areas=[a.capitalize() for a in areas],
        facts=[AreaFacts(area=a.capitalize(), facts=[f"[offline] a stated fact about the {a} of {task}."]) for a in areas],
        misconceptions=[f"[offline] a common misconception about {task}."],
        sources=["offline model: no sources consulted"],
    )


def _review(messages: list[dict[str, Any]]) -> Review:
    earlier = sum(str(m.get("content", "")).count("\n### Earlier review ") for m in messages)
    score = min(10, 6 + earlier)
    return Review(
        score=score,
        approved=score >= 8,
        issues=[] if score >= 8 else [f"[offline] issue {earlier + 1}: the draft could be more specific."],
        missed_topics=[],
        suggestions=[] if score >= 8 else ["[offline] add a concrete example."],
        summary=f"[offline] review {earlier + 1}: score {score}.",
    )


def _draft(task: str, messages: list[dict[str, Any]]) -> str:
    text = "\n".join(str(m.get("content", "")) for m in messages)
    areas = re.findall(r'"area":\s*"([^"]+)"', text) or [task]
    revision = text.count("\n## Review to address")
    lines = [f"# {task}", "", f"_Written by the {LABEL}; revision {revision}._", ""]
    for area in dict.fromkeys(areas):
        lines += [f"## {area}", "", f"[offline] A paragraph about {area}.", ""]
    return "\n".join(lines).rstrip() + "\n"


def complete(request: dict[str, Any]) -> Completion:
    messages = request.get("messages", [])
    schema_name = ((request.get("response_format") or {}).get("json_schema") or {}).get("name")
    if schema_name == "Findings":
        content = msgspec.json.encode(_findings(_task(messages))).decode()
    elif schema_name == "Review":
        content = msgspec.json.encode(_review(messages)).decode()
    else:
        content = _draft(_task(messages), messages)
    prompt_tokens = sum(len(str(m.get("content", ""))) for m in messages) // 4
    completion_tokens = len(content) // 4
    return Completion(
        content=content,
        tool_calls=[],
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        latency_ms=0.0,
        model="offline",
    )
