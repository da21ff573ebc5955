"""The content pipeline's prompts, and the one place each agent's context is assembled.

Each agent gets only what it needs: the researcher the task; the writer the task, the
findings and (when revising) its previous draft with the latest review, never the whole
history; the reviewer the task, the findings, the draft and its own earlier reviews.
"""

from __future__ import annotations

from typing import Any

import msgspec

from agentlog.events import Findings, Review, ToolCall, ToolReturned, ToolSpec

SYSTEM = {
    "researcher": (
        "You are a meticulous research analyst. Given a task, identify its key areas, the "
        "important facts for each area, common misconceptions, and sources a reader can check. "
        "Answer with JSON matching the given schema and nothing else."
    ),
    "counter_researcher": (
        "You are a skeptical research analyst. Given a task, find the counter-arguments, "
        "limitations, trade-offs, open questions and common misconceptions that a one-sided "
        "account would miss; give facts for each as key areas, and sources a reader can check. "
        "Answer with JSON matching the given schema and nothing else."
    ),
    "writer": (
        "You are a clear technical writer. Write a well-structured Markdown article for the task, "
        "using only the research findings you are given; do not invent facts beyond them. "
        "When given a review, revise the draft to address every issue and missed topic. "
        "Answer with the Markdown article only."
    ),
    "reviewer": (
        "You are a demanding editor. Score the draft from 1 to 10 for accuracy against the "
        "findings, completeness and clarity; list concrete issues, missed topics and suggestions. "
        "You are shown your earlier reviews of previous drafts: do not flag again what has been "
        "fixed, and say if an issue you raised persists. "
        "Answer with JSON matching the given schema and nothing else."
    ),
}

_encode = msgspec.json.Encoder().encode


def json_schema(cls: type) -> dict[str, Any]:
    """``cls``'s JSON schema with the object itself at the top (not a ``$ref``).

    Servers that compile a schema into a grammar (llama.cpp) need the top-level object.
    """
    schema = msgspec.json.schema(cls)
    ref = schema.pop("$ref", None)
    if ref is None:
        return schema
    defs = schema.pop("$defs")
    top = dict(defs.pop(ref.rsplit("/", 1)[1]))
    if defs:
        top["$defs"] = defs
    return top


def _schema_format(cls: type) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": cls.__name__, "schema": json_schema(cls)}}


RESPONSE_FORMATS = {
    "researcher": _schema_format(Findings),
    "counter_researcher": _schema_format(Findings),
    "reviewer": _schema_format(Review),
}


def findings_json(findings: Findings) -> str:
    last = _last_findings
    if last is not None and last[0] is findings:  # a run's every later prompt quotes the same findings
        return last[1]
    text = msgspec.json.format(_encode(findings).decode(), indent=2)
    _remember((findings, text))
    return text


_last_findings: tuple[Findings, str] | None = None


def _remember(pair: tuple[Findings, str]) -> None:
    global _last_findings
    _last_findings = pair  # one assignment: a thread reads the old pair or the new, whole


def researcher_messages(task: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Task: {task}\n\nResearch this task."}]


def counter_researcher_messages(task: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Task: {task}\n\nFind the counter-arguments, limitations "
             "and misconceptions for this task."}]


def tools_param(specs: list[ToolSpec]) -> list[dict[str, Any]]:
    """Tool specs in the chat-completions ``tools`` format."""
    return [{"type": "function", "function": {"name": s.name, "description": s.description,
                                              "parameters": s.parameters}} for s in specs]


def tool_round_messages(answer_content: str, tool_calls: list[ToolCall],
                        results: list[ToolReturned]) -> list[dict[str, Any]]:
    """The assistant's tool-calling message and one ``tool`` message per result, in call order."""
    assistant: dict[str, Any] = {
        "role": "assistant",
        "content": answer_content or None,
        "tool_calls": [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                       for c in tool_calls],
    }
    return [assistant, *({"role": "tool", "tool_call_id": r.tool_call_id, "content": r.result} for r in results)]


def writer_messages(task: str, findings: Findings, previous: str | None, review: Review | None,
                    note: str | None = None) -> list[dict[str, str]]:
    """The writer's request; ``note`` is a person's reason for sending the draft back, which comes first."""
    parts = [f"Task: {task}", "", "## Research findings", "```json", findings_json(findings), "```"]
    if previous is not None and note is not None:
        parts += ["", "## Your previous draft", previous, "",
                  "## A person sent this draft back: address this first, it matters most", note]
        if review is not None:
            parts += ["", "## Review to address", _review_text(review)]
        parts += ["", "Revise the draft: first the person's note, then the review."]
    elif previous is not None and review is not None:
        parts += ["", "## Your previous draft", previous, "", "## Review to address", _review_text(review)]
        parts += ["", "Revise the draft to address the review."]
    else:
        parts += ["", "Write the article."]
    return [{"role": "user", "content": "\n".join(parts)}]


def reviewer_messages(task: str, findings: Findings, draft: str, earlier: list[Review]) -> list[dict[str, str]]:
    parts = [f"Task: {task}", "", "## Research findings", "```json", findings_json(findings), "```"]
    for number, review in enumerate(earlier, start=1):
        parts += ["", f"### Earlier review {number}", _review_text(review)]
    parts += ["", "## Draft to review", draft]
    return [{"role": "user", "content": "\n".join(parts)}]


def reask_messages(messages: list[dict[str, Any]], bad_answer: str, reason: str) -> list[dict[str, Any]]:
    """The original request plus the rejected answer and why it was rejected."""
    return [
        *messages,
        {"role": "assistant", "content": bad_answer},
        {"role": "user", "content": f"Your answer was rejected: {reason}\nAnswer again with valid JSON only."},
    ]


def _review_text(review: Review) -> str:
    lines = [f"Score: {review.score}/10. {review.summary}"]
    for title, items in (("Issues", review.issues), ("Missed topics", review.missed_topics),
                         ("Suggestions", review.suggestions)):
        if items:
            lines.append(f"{title}:")
            lines += [f"- {item}" for item in items]
    return "\n".join(lines)
