"""The offline model: no key, no network, deterministic, schema-valid outputs.

It is a stand-in for demos and tests, not a language model: its text is assembled from
the request, and every answer says so. The reviewer scores 6, then one point more per
earlier review it is shown, so a default run shows the write/review loop converge.

Offered tools, it calls the first one once (arguments derived from the task), then
answers with findings that cite what the tool returned (files and lines of a documents
search) in ``sources``. Asked for counter-arguments, it answers with other areas.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import msgspec

from agentlog.events import AreaFacts, Findings, Review

from .types import Completion

LABEL = "offline model (deterministic stand-in, not a language model)"
_ANGLES = ("core concepts", "how it works", "configuration", "failure modes", "trade-offs", "history")
_COUNTER_ANGLES = ("limitations", "counter-arguments", "open questions", "costs", "alternatives", "risks")


def _line(text: str) -> str:
    """``text`` cut to fit a line of the output schemas (300 characters)."""
    return text if len(text) <= 300 else text[:299] + "…"


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


def _findings(task: str, messages: list[dict[str, Any]]) -> Findings:
    counter = any(m.get("role") == "user" and "counter-arguments" in str(m.get("content", "")) for m in messages)
    areas = _pick(task, _COUNTER_ANGLES if counter else _ANGLES, 3)
    facts = [AreaFacts(area=a.capitalize(), facts=[_line(f"[offline] a stated fact about the {a} of {task}.")])
             for a in areas]
    cited, found = _tool_evidence(messages)
    if found:
        facts.append(AreaFacts(area="From the documents", facts=found))
    return Findings(
        key_areas=[a.capitalize() for a in areas] + (["From the documents"] if found else []),
        facts=facts,
        misconceptions=[_line(f"[offline] an overlooked limitation of {task}." if counter
                              else f"[offline] a common misconception about {task}.")],
        sources=cited or ["offline model: no sources consulted"],
    )


def _tool_evidence(messages: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """``(sources, facts)`` from the tool results in ``messages``: ``path:line`` of each hit."""
    sources: list[str] = []
    facts: list[str] = []
    for m in messages:
        if m.get("role") != "tool":
            continue
        try:
            results = json.loads(str(m.get("content", ""))).get("results", [])
        except (ValueError, AttributeError):
            results = []
        for hit in results if isinstance(results, list) else []:
            if isinstance(hit, dict) and "path" in hit:
                where = _line(f"{hit['path']}:{hit.get('line', 1)}")
                sources.append(where)
                facts.append(_line(f"[offline] {where} says: {' '.join(str(hit.get('snippet', '')).split())}"))
    return list(dict.fromkeys(sources))[:8], facts[:8]


def _tool_call(tool: dict[str, Any], task: str) -> tuple[str, str, str]:
    """One call of ``tool`` with its string parameters set to the task (required others get a default)."""
    function = tool.get("function", {})
    parameters = function.get("parameters") or {}
    required = set(parameters.get("required", []))
    defaults = {"integer": 3, "number": 3, "boolean": False, "array": [], "object": {}}
    args: dict[str, Any] = {}
    for key, schema in (parameters.get("properties") or {}).items():
        kind = schema.get("type") if isinstance(schema, dict) else None
        if kind == "string" and (key in required or key == "query"):
            args[key] = task
        elif key in required:
            args[key] = task if kind == "string" else defaults.get(kind)
    name = function.get("name", "tool")
    arguments = json.dumps(args, sort_keys=True)
    call_id = "call_" + hashlib.sha256(f"{name}:{arguments}".encode()).hexdigest()[:16]
    return call_id, name, arguments


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
    prompt_tokens = sum(len(str(m.get("content", ""))) for m in messages) // 4
    tools = request.get("tools") or []
    if tools and not any(m.get("role") == "tool" for m in messages):
        call = _tool_call(tools[0], _task(messages))
        return Completion(content="", tool_calls=[call], prompt_tokens=prompt_tokens,
                          completion_tokens=len(call[2]) // 4 + 1, latency_ms=0.0, model="offline")
    schema_name = ((request.get("response_format") or {}).get("json_schema") or {}).get("name")
    if schema_name == "Findings":
        content = msgspec.json.encode(_findings(_task(messages), messages)).decode()
    elif schema_name == "Review":
        content = msgspec.json.encode(_review(messages)).decode()
    else:
        content = _draft(_task(messages), messages)
    completion_tokens = len(content) // 4
    return Completion(
        content=content,
        tool_calls=[],
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        latency_ms=0.0,
        model="offline",
    )
