"""Text for people: progress lines, tables, and a run's story. No I/O here."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

import msgspec

from .events import (
    ApprovalDecided,
    ApprovalRequested,
    BudgetReached,
    DraftReady,
    Event,
    FindingsReady,
    LLMCallAnswered,
    LLMCallFailed,
    LLMCallRequested,
    OutputRejected,
    ResearchPartReady,
    ReviewScored,
    RunFailed,
    RunFinished,
    RunForked,
    RunClaimed,
    RunQueued,
    RunResumed,
    ToolInvoked,
    ToolReturned,
    encode,
)
from .replay import RunCost, RunView, VerifyResult
from .store import RunSummary, StoredEvent


def escaped(text: str) -> str:
    """``text`` safe for a terminal line: control characters (NUL, ESC, newlines, ...) and bytes
    that were not UTF-8 (kept by Python as lone surrogates) shown as escapes like ``\\x00``."""
    if text.isprintable():
        return text
    out = []
    for c in text:
        if c.isprintable():
            out.append(c)
        elif "\udc80" <= c <= "\udcff":  # an undecodable byte of a command-line argument
            out.append(f"\\x{ord(c) - 0xDC00:02x}")
        else:
            out.append(c.encode("unicode_escape", "backslashreplace").decode("ascii"))
    return "".join(out)


def _clip(text: str, width: int) -> str:
    text = escaped(" ".join(text.split()))
    return text if len(text) <= width else text[: width - 1] + "…"


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def progress_line(event: Event) -> str | None:
    match event:
        case LLMCallRequested():
            return f"[{event.step}] {event.agent} -> {event.request.get('model')} (call {event.call_id})"
        case LLMCallAnswered(reused_from=ref) if ref is not None:
            return f"  reused the recorded answer from run {ref.run_id} event {ref.seq}: no call made"
        case LLMCallAnswered():
            return f"  answered in {event.latency_ms / 1000:.1f}s, {event.usage.total_tokens} tokens"
        case LLMCallFailed():
            then = "giving up" if event.gave_up else "retrying"
            return f"  attempt {event.attempt} failed: {event.error_kind}: {_clip(event.message, 100)} ({then})"
        case OutputRejected():
            return f"  rejected {event.agent}'s output: {_clip(event.reason, 120)}"
        case ToolInvoked():
            return f"  tool {event.name}({_clip(event.arguments, 80)})"
        case ToolReturned(reused_from=ref) if ref is not None:
            return f"  tool {event.name}: reused the recorded result from run {ref.run_id} event {ref.seq}"
        case ToolReturned():
            return f"  tool {event.name} {'failed' if event.is_error else 'returned'}: {_clip(event.result, 90)}"
        case ResearchPartReady():
            return (f"  {event.part} research: {len(event.findings.key_areas)} key areas, "
                    f"{len(event.findings.sources)} sources")
        case FindingsReady():
            return f"  findings: {len(event.findings.key_areas)} key areas, {len(event.findings.sources)} sources"
        case DraftReady():
            return f"  draft {event.iteration}: {len(event.draft)} characters"
        case ReviewScored():
            return f"  review {event.iteration}: score {event.review.score}/10 - {_clip(event.review.summary, 90)}"
        case RunForked():
            return f"forked from run {event.parent_run_id} at event {event.parent_seq}"
        case RunResumed():
            return f"resuming after event {event.previous_seq}"
        case RunQueued():
            return "queued for a worker"
        case RunClaimed():
            return f"claimed by worker {event.worker} after event {event.previous_seq}"
        case ApprovalRequested():
            return f"waiting for a person to decide on draft {event.iteration} ({event.point})"
        case ApprovalDecided():
            return f"{event.by}: {event.decision} draft {event.iteration}" + (
                f" - {_clip(event.note, 90)}" if event.note else "")
        case RunFinished():
            return f"finished: {event.reason.replace('_', ' ')} after {event.iterations} iteration(s)"
        case BudgetReached():
            return f"  {event.scope} budget ({event.budget}) reached: call {event.call_id} not sent"
        case RunFailed():
            return f"failed: {event.reason}"
    return None


def watch_line(stored: StoredEvent) -> str:
    """One event of a run being watched: seq, time, type and what it says."""
    when = time.strftime("%H:%M:%S", time.localtime(stored.recorded_at))
    detail = progress_line(stored.event)
    return f"{stored.seq:>5}  {when}  {stored.type}" + (f"  {detail.strip()}" if detail else "")


def waiting_lines(run_id: str, iteration: int, point: str) -> list[str]:
    """What to do about a run that waits for a person (one line each, for stderr)."""
    at = "the final draft" if point == "final" else "the reviewed draft"
    return [
        f"run {run_id} waits for a person to decide on draft {iteration} ({at}); see it with "
        f"`agentlog show {run_id}` or in `agentlog serve`",
        f"decide with: agentlog approve {run_id} | agentlog edit {run_id} --draft FILE | "
        f"agentlog reject {run_id} --note TEXT",
    ]


def outcome_line(view: RunView, cost: RunCost | None = None) -> str:
    scores = " -> ".join(map(str, view.scores)) or "none"
    reused = f", {view.reused_tokens} reused" if view.reused_tokens else ""
    spent = f", cost {cost_text(cost)}" if cost is not None else ""
    return (f"run {view.run_id}: {view.status} ({(view.finish_reason or '').replace('_', ' ')}), "
            f"scores {scores}, {view.live_tokens} tokens{reused}{spent}")


def cost_text(cost: RunCost) -> str:
    """``$0.0123 spent, $0.0040 saved by reuse``; an unknown price is said, never shown as 0."""
    saved = f", {cost.saved_text} saved by reuse" if cost.calls_reused else ""
    return f"{cost.spent_text} spent{saved}"


def _usd_cell(value: float | None) -> str:
    return "unknown" if value is None else f"${value:,.4f}"


def runs_table(runs: Sequence[RunSummary], costs: dict[str, RunCost] | None = None,
               owners: dict[str, str] | None = None) -> str:
    """The runs index as a table; ``owners`` names the process driving a run (its live lease)."""
    costs, owners = costs or {}, owners or {}
    rows = [
        (r.run_id, _clip(r.task, 48), r.pipeline, r.status, r.score if r.score is not None else "-",
         r.iterations, r.tokens,
         _usd_cell(costs[r.run_id].spent_usd) if r.run_id in costs else "-",
         _usd_cell(costs[r.run_id].saved_usd) if r.run_id in costs else "-",
         _when(r.created_at), r.parent_run_id or "", owners.get(r.run_id, ""))
        for r in runs
    ]
    return _table(("ID", "TASK", "PIPELINE", "STATUS", "SCORE", "ITER", "TOKENS", "COST", "SAVED", "STARTED",
                   "PARENT", "OWNER"), rows)


def _header(view: RunView) -> list[str]:
    lines = [f"run       {view.run_id}", f"task      {escaped(view.task)}", f"pipeline  {view.pipeline}",
             f"status    {view.status}" + (f" ({view.finish_reason})" if view.finish_reason else "")]
    if view.failure:
        lines.append(f"failure   {view.failure}")
    if view.parent_run_id:
        at = f" at event {view.fork_seq}" if view.fork_seq else ""
        lines.append(f"parent    {view.parent_run_id}{at}")
    for name, agent in view.agents.items():
        lines.append(f"agent     {name}: {agent.model} (temperature {agent.temperature})")
    lines.append(f"settings  max iterations {view.max_iterations}, approve at score {view.threshold}"
                 + (f", a person decides: {view.approval}" if view.approval != "never" else ""))
    if view.waiting_for is not None:
        lines.append(f"waiting   for a person to decide on draft {view.waiting_for} ({view.waiting_point})")
    lines.append(f"tokens    {view.live_tokens} spent" + (f", {view.reused_tokens} reused" if view.reused_tokens else ""))
    return lines


def _budget_lines(view: RunView, cost: RunCost | None) -> list[str]:
    lines = []
    if cost is not None:
        lines.append(f"cost      {cost_text(cost)}")
    limits = [f"${view.budget_usd:,.4f}" if view.budget_usd is not None else "",
              f"{view.budget_tokens:,} tokens" if view.budget_tokens is not None else ""]
    if any(limits):
        lines.append("budget    " + ", ".join(x for x in limits if x))
    if view.sample > 1:
        lines.append(f"sample    {view.sample}")
    if view.sweep_id:
        lines.append(f"sweep     {view.sweep_id} (variant {view.sweep_variant})")
    return lines


def show(summary: RunSummary, view: RunView, cost: RunCost | None = None) -> str:
    lines = _header(view) + _budget_lines(view, cost) + [f"started   {_when(summary.created_at)}", "", "events"]
    rows = [(t.seq, time.strftime("%H:%M:%S", time.localtime(t.recorded_at)), t.type, t.step, t.agent,
             _clip(t.detail, 70)) for t in view.timeline]
    lines.append(_table(("SEQ", "TIME", "TYPE", "STEP", "AGENT", "DETAIL"), rows))
    lines += ["", "scores    " + (" -> ".join(map(str, view.scores)) or "none")]
    if view.final_draft:
        lines += ["", "final draft", "-----------", view.final_draft.rstrip()]
    return "\n".join(lines)


def replay(view: RunView, cost: RunCost | None = None) -> str:
    lines = _header(view) + _budget_lines(view, cost) + ["", "timeline"]
    rows = []
    for c in view.calls:
        if c.status == "reused" and c.reused_from:
            how = f"reused {c.reused_from.run_id}#{c.reused_from.seq}"
        else:
            how = c.status + (f" after {c.failures} failed attempt(s)" if c.failures else "")
        rows.append((c.seq, c.step, c.agent, c.model, c.prompt_tokens + c.completion_tokens,
                     f"{c.latency_ms / 1000:.2f}s" if c.status == "answered" else "-", how))
    lines.append(_table(("SEQ", "PHASE", "AGENT", "MODEL", "TOKENS", "LATENCY", "CALL"), rows))
    if view.tools:
        lines += ["", "tool calls"]
        lines.append(_table(("SEQ", "PHASE", "AGENT", "TOOL", "ARGUMENTS", "RESULT"), [
            (t.seq, t.step, t.agent, t.name, _clip(t.arguments, 40),
             (f"reused {t.reused_from.run_id}#{t.reused_from.seq}: " if t.reused_from else
              "error: " if t.status == "error" else "") + _clip(t.result or "(no result)", 50))
            for t in view.tools
        ]))
    if view.findings:
        lines += ["", "findings"]
        for area in view.findings.facts:
            lines.append(f"  {area.area}")
            lines += [f"    - {fact}" for fact in area.facts]
        if view.findings.misconceptions:
            lines.append("  misconceptions")
            lines += [f"    - {m}" for m in view.findings.misconceptions]
        if view.findings.sources:
            lines.append("  sources")
            lines += [f"    - {s}" for s in view.findings.sources]
    reviews = {r.iteration: r for r in view.reviews}
    decisions = {d.iteration: d for d in view.decisions}
    for draft in view.drafts:
        lines += ["", f"draft {draft.iteration} (event {draft.seq})", "-" * 20, draft.draft.rstrip()]
        review = reviews.get(draft.iteration)
        if review:
            r = review.review
            lines += ["", f"review {draft.iteration}: score {r.score}/10{' (approved)' if r.approved else ''} - {r.summary}"]
            for title, items in (("issues", r.issues), ("missed topics", r.missed_topics), ("suggestions", r.suggestions)):
                lines += [f"  {title}: {item}" for item in items]
        decision = decisions.get(draft.iteration)
        if decision:
            lines += ["", f"person {draft.iteration}: {decision.by} decided {decision.decision} at "
                      f"{_when(decision.recorded_at)}" + (f" - {decision.note}" if decision.note else "")]
    if view.waiting_for is not None:
        lines += ["", f"waiting for a person to decide on draft {view.waiting_for}"]
    ending = view.finish_reason or (f"failed: {view.failure}" if view.failure else "not finished")
    lines += ["", f"scores    {' -> '.join(map(str, view.scores)) or 'none'}", f"ended     {ending}"]
    return "\n".join(lines)


class RereviewRow(msgspec.Struct, frozen=True):
    source_run: str
    rereview_run: str
    draft: int
    old_score: int | None
    new_score: int


def rereview_table(rows: Sequence[RereviewRow], model: str) -> str:
    table = _table(("RUN", "DRAFT", "OLD", "NEW", "DIFF", "RE-REVIEW RUN"), [
        (r.source_run, r.draft, r.old_score if r.old_score is not None else "-", r.new_score,
         f"{r.new_score - r.old_score:+d}" if r.old_score is not None else "-", r.rereview_run)
        for r in rows
    ])
    diffs = [r.new_score - r.old_score for r in rows if r.old_score is not None]
    mean = f"{sum(diffs) / len(diffs):+.2f}" if diffs else "n/a"
    return f"{table}\n\nmean difference ({model} minus original): {mean} over {len(diffs)} draft(s)"


def verify_line(result: VerifyResult) -> str:
    if result.ok:
        return f"{result.run_id}: verified ({result.checked} decisions over {result.events} events)"
    d = result.divergence
    assert d is not None
    expected = "; ".join(d.expected) or "nothing (the run should have ended)"
    return (f"{result.run_id}: DIVERGES at event {d.seq}\n  recorded: {d.recorded}\n"
            f"  today's code decides: {expected}")


def stored_to_builtins(stored: StoredEvent) -> dict:
    # The data is today's encoding of the (upcast) event, so it carries today's version.
    type_name, version, data = encode(stored.event)
    return {"run_id": stored.run_id, "seq": stored.seq, "type": type_name, "version": version,
            "recorded_at": stored.recorded_at, "data": json.loads(data)}


# --- sweeps ---------------------------------------------------------------------------


def _num(value: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if value is None else fmt.format(value)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


SWEEP_COLUMNS = ("variant", "runs", "finished", "failed", "mean_score", "sd_score", "min_score", "max_score",
                 "mean_delta", "approval_rate", "mean_iterations", "tokens_spent", "tokens_reused", "cost_usd",
                 "saved_usd", "mean_latency_s", "calls_made", "calls_reused")


def sweep_comparison(c) -> str:  # noqa: ANN001 - a replay.compare.Comparison
    """The comparison of a sweep: per variant, then the runs on which variants disagree."""
    spec = c.spec
    what = f"{len(spec.runs)} run(s) branched at {spec.at}" if spec.runs else f"{len(spec.tasks)} fresh task(s)"
    lines = [f"sweep {c.sweep_id}: {what} x {len(spec.variants)} variant(s) x {spec.samples} sample(s) "
             f"= {c.expected} runs ({len(c.members)} recorded)", f"note: {c.paired}", ""]
    rows = [(v.variant, v.runs, f"{v.mean_score:.2f} ± {v.sd_score:.2f}" if v.mean_score is not None else "-",
             f"{v.min_score}-{v.max_score}" if v.min_score is not None else "-", _num(v.mean_delta, "{:+.2f}"),
             _pct(v.approval_rate), _num(v.mean_iterations, "{:.1f}"), v.tokens_spent, v.tokens_reused,
             _usd_cell(v.cost_usd), _usd_cell(v.saved_usd), _num(v.mean_latency_s, "{:.2f}s"),
             f"{v.failed}" if v.failed else "")
            for v in c.variants]
    lines.append(_table(("VARIANT", "RUNS", "SCORE (MEAN ± SD)", "RANGE", "Δ VS PARENT", "APPROVED", "ITER",
                         "TOKENS", "REUSED", "COST", "SAVED", "LATENCY", "FAILED"), rows))
    unpriced = sorted({u for v in c.variants for u in v.unpriced})
    if unpriced:
        lines.append(f"(cost unknown: no price for {', '.join(unpriced)}; add it to the config file's [prices])")
    labels = [v.label for v in spec.variants]
    lines += ["", f"where variants disagree: {len(c.disagreements)} of "
              f"{len({(m.source, m.sample) for m in c.members})} run(s)"]
    if c.disagreements:
        drows = []
        for d in c.disagreements:
            cells = [("-" if d.scores.get(label) is None else str(d.scores[label]))
                     + (" ✓" if d.approved.get(label) else "") for label in labels]
            drows.append((d.source, d.sample, "-" if d.parent_score is None else d.parent_score, *cells))
        lines.append(_table(("RUN", "SAMPLE", "PARENT", *labels), drows))
        lines.append("(✓ approved)")
    failed = [m for m in c.members if m.status != "finished"]
    for m in failed:
        lines.append(f"run {m.run_id} ({m.variant}, from {m.source}): {m.status}"
                     + (f": {m.failure}" if m.failure else ""))
    return "\n".join(lines)


def sweep_csv(c) -> str:  # noqa: ANN001 - a replay.compare.Comparison
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("sweep_id", *SWEEP_COLUMNS))
    for v in c.variants:
        writer.writerow((c.sweep_id, *("" if getattr(v, k) is None else getattr(v, k) for k in SWEEP_COLUMNS)))
    return out.getvalue()


def sweeps_table(infos) -> str:  # noqa: ANN001 - replay.sweep.SweepInfo
    rows = [(i.sweep_id, _when(i.created_at), i.at or "(fresh)", i.sources, _clip(", ".join(i.variants), 50),
             i.samples, f"{i.members}/{i.expected}", i.finished, i.failed) for i in infos]
    return _table(("SWEEP", "STARTED", "AT", "RUNS", "VARIANTS", "SAMPLES", "MEMBERS", "FINISHED", "FAILED"), rows)
