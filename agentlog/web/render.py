"""HTML pages as f-strings. Every value from the log goes through ``e()``: models and users
write tasks, drafts and reviews, and none of it may become markup."""

from __future__ import annotations

import time
from html import escape
from urllib.parse import quote, urlencode

from agentlog.store import RunSummary

from .chart import score_chart
from .diff import diff_html, diff_stats
from .queries import STATUSES, RunsPage
from agentlog.replay.view import RunView, TimelineRow

from .views import RunPage, config_table


def e(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def run_url(run_id: str) -> str:
    return "/runs/" + quote(run_id, safe="")


def run_link(run_id: str | None, text: str | None = None) -> str:
    if not run_id:
        return ""
    return f'<a class="run-link" href="{e(run_url(run_id))}"><code>{e(text or run_id)}</code></a>'


def compare_url(a: str, b: str) -> str:
    return "/compare?" + urlencode({"a": a, "b": b})


def when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else ""


def badge(status: str) -> str:
    return f'<span class="badge {e(status)}">{e(status)}</span>'


def number(value: int | float | None) -> str:
    return "" if value is None else f"{value:,}"


def layout(title: str, body: str, db_path: str) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)} · agentlog</title>
<link rel="stylesheet" href="/static/viewer.css">
<script src="/static/viewer.js" defer></script>
</head><body>
<header class="top"><a class="brand" href="/">agentlog</a>
<nav><a href="/">Runs</a> &nbsp; <a href="/sweeps">Sweeps</a> &nbsp; <a href="/compare">Compare</a></nav>
<span class="db" title="event log">{e(db_path)}</span></header>
<main>
{body}
</main></body></html>"""


# --- runs page ---------------------------------------------------------------------


def runs_page(page: RunsPage) -> str:
    options = "".join(f'<option value="{s}"{" selected" if s == page.status else ""}>{s}</option>'
                      for s in STATUSES)
    rows = "".join(_run_row(r) for r in page.runs) or (
        '<tr><td colspan="10" class="muted empty">No runs match.</td></tr>')
    label = "run" if page.total == 1 else "runs"

    def at(n: int) -> str:
        params = {k: v for k, v in (("status", page.status), ("q", page.text)) if v}
        return "/?" + urlencode(params | {"page": n})

    newer = f'<a rel="prev" href="{e(at(page.page - 1))}">&larr; newer</a>' if page.page > 1 else ""
    older = f'<a rel="next" href="{e(at(page.page + 1))}">older &rarr;</a>' if page.page < page.pages else ""
    return f"""<h1>Runs</h1>
<form class="filters" method="get" action="/">
<select name="status" aria-label="status"><option value="">any status</option>{options}</select>
<input type="search" name="q" value="{e(page.text)}" placeholder="task or run id" aria-label="search">
<button type="submit">Filter</button> <a href="/">clear</a>
</form>
<p class="count muted">{page.total:,} {label}</p>
<table class="runs">
<thead><tr><th>run</th><th>task</th><th>pipeline</th><th>status</th><th class="num">score</th>
<th class="num">iterations</th><th class="num">tokens</th><th>started</th><th>parent</th><th>fork point</th>
</tr></thead><tbody>{rows}</tbody></table>
<nav class="pager">{newer} <span class="muted">page {page.page} of {page.pages}</span> {older}</nav>"""


def _run_row(r: RunSummary) -> str:
    task = r.task if len(r.task) <= 160 else r.task[:157] + "..."
    fork = f"event {r.fork_seq}" if r.fork_seq else ("re-review" if r.parent_run_id else "")
    return (f'<tr class="run" data-run-id="{e(r.run_id)}" data-status="{e(r.status)}">'
            f"<td>{run_link(r.run_id)}</td><td class=\"task-cell\">{e(task)}</td><td>{e(r.pipeline)}</td>"
            f"<td>{badge(r.status)}</td><td class=\"num\">{number(r.score)}</td>"
            f"<td class=\"num\">{r.iterations}</td><td class=\"num\">{number(r.tokens)}</td>"
            f"<td class=\"when\">{when(r.created_at)}</td><td>{run_link(r.parent_run_id)}</td><td>{e(fork)}</td></tr>")


# --- run page ----------------------------------------------------------------------


def run_page(run: RunPage, ancestors: list[RunSummary], children: list[RunSummary], decision: str = "") -> str:
    """A run's page; ``decision`` is the form a waiting run offers (empty when read-only)."""
    s = run.summary
    live = ""
    if s.status in ("queued", "running") and run.damage is None:
        live = (f' data-live-url="{e(run_url(s.run_id) + "/events")}" data-last-seq="{run.last_seq}"'
                f' data-stream-url="{e(run_url(s.run_id) + "/stream")}"')
    note = ('<p id="livenote" class="livenote">running: new events appear here as they are recorded</p>'
            '<section id="streaming" class="streaming"></section>') if live else ""
    if run.damage is not None:
        note += (f'<p id="damage" class="error">Event {run.damage.seq} cannot be read ({e(run.damage.reason)}): '
                 f"shown are the events before it; later events are not.</p>")
    rows = "".join(timeline_row(r, run) for r in run.view.timeline) + damaged_row(run)
    part = sections(run)
    return f"""<div class="run-page"{live}>
<h1>Run <code>{e(s.run_id)}</code></h1>
<p class="task">{e(s.task)}</p>
{note}
<dl id="summary" class="summary">{summary_items(run)}</dl>
{_waiting(run, decision)}
<div class="cols">
<section id="lineage"><h2>Lineage</h2>{_lineage(run, ancestors, children)}</section>
<section id="agents"><h2>Agents</h2>{_agents(run)}</section>
<section id="scores">{part["scores"]}</section>
</div>
<section id="timeline"><h2>Timeline</h2>
<table><thead><tr><th class="num">seq</th><th>time</th><th>type</th><th>step</th><th>agent</th><th>model</th>
<th class="num">latency</th><th class="num">tokens</th><th>answer</th><th>detail</th></tr></thead>
<tbody>{rows}</tbody></table></section>
<section id="drafts">{part["drafts"]}</section>
<section id="reviews">{part["reviews"]}</section>
<section id="findings">{part["findings"]}</section>
</div>"""


def _waiting(run: RunPage, form: str) -> str:
    view = run.view
    if view.waiting_for is None:
        return ""
    at = "the final draft" if view.waiting_point == "final" else "the reviewed draft"
    how = form or (f'<p class="muted">This viewer is read-only. Decide from the terminal: '
                   f'<code>agentlog approve {e(view.run_id)}</code>, <code>agentlog edit {e(view.run_id)} '
                   f'--draft FILE</code> or <code>agentlog reject {e(view.run_id)} --note TEXT</code>.</p>')
    return (f'<section id="decision" class="decision" data-iteration="{view.waiting_for}">'
            f'<h2>Waiting for a person: draft {view.waiting_for} ({e(at)})</h2>'
            f'<p>Read <a href="#draft-{view.waiting_for}">draft {view.waiting_for}</a> and its review below, '
            f'then decide. The run goes on after your decision.</p>{how}</section>')


def decision_form(run: RunPage, token: str, default_by: str) -> str:
    """Approve, edit (in a text area prefilled with the draft) or reject the draft a run waits on."""
    view = run.view
    n = view.waiting_for
    assert n is not None
    url = e(run_url(view.run_id) + "/decision")
    hidden = (f'<input type="hidden" name="token" value="{e(token)}">'
              f'<input type="hidden" name="seq" value="{view.last_seq}">')
    by = (f'<label>Your name <input type="text" name="by" value="{e(default_by)}" maxlength="100" '
          f'autocomplete="off"></label>')
    draft = view.drafts[n - 1].draft if len(view.drafts) >= n else ""
    return f"""<div class="decide cols">
<form id="approve-form" method="post" action="{url}">{hidden}<input type="hidden" name="decision" value="approve">
<h3>Approve</h3><p class="muted">The run finishes with draft {n}.</p>
<label>Note (optional) <input type="text" name="note" maxlength="2000"></label>{by}
<button type="submit" class="approve">Approve draft {n}</button></form>
<form id="reject-form" method="post" action="{url}">{hidden}<input type="hidden" name="decision" value="reject">
<h3>Send back</h3><p class="muted">The writer revises draft {n}, your note first.</p>
<label>Note for the writer <textarea name="note" rows="4" required maxlength="4000"></textarea></label>{by}
<button type="submit" class="reject">Send back with this note</button></form>
</div>
<form id="edit-form" class="edit" method="post" action="{url}">{hidden}<input type="hidden" name="decision" value="edit">
<h3>Edit</h3><p class="muted">Your version becomes draft {n + 1}{
    " and the run finishes with it" if view.waiting_point == "final" else ", reviewed like any draft"}.</p>
<textarea name="draft" rows="16" required>{e(draft)}</textarea>
<label>Note (optional) <input type="text" name="note" maxlength="2000"></label>{by}
<button type="submit" class="edit">Save my version</button></form>"""


def decision_refused(run_id: str, message: str) -> str:
    return (f'<h1>Decision not recorded</h1><p class="error">{e(message)}</p>'
            f'<p><a href="{e(run_url(run_id))}">Back to the run</a></p>')


def decision_recorded(run_id: str, why_not_continued: str) -> str:
    return (f'<h1>Decision recorded</h1><p>The run did not continue here: {e(why_not_continued)}.</p>'
            f'<p>Continue it from the terminal: <code>agentlog resume {e(run_id)}</code></p>'
            f'<p><a href="{e(run_url(run_id))}">Back to the run</a></p>')


def summary_items(run: RunPage) -> str:
    s = run.summary
    items = [("status", badge(s.status)), ("pipeline", e(s.pipeline)), ("score", number(s.score) or "-"),
             ("iterations", str(s.iterations)), ("tokens", number(s.tokens)), ("events", str(s.last_seq)),
             ("started", e(when(s.created_at))), ("updated", e(when(s.updated_at)))]
    if run.cost is not None:
        items[5:5] = [("cost", e(run.cost.spent_text)), ("saved by reuse", e(run.cost.saved_text))]
    if run.outcome:
        items.append(("outcome", e(run.outcome)))
    return "".join(f'<div class="item-{k.replace(" ", "-")}"><dt>{k}</dt><dd>{v}</dd></div>' for k, v in items)


def _lineage(run: RunPage, ancestors: list[RunSummary], children: list[RunSummary]) -> str:
    s = run.summary
    parts = []
    if s.parent_run_id:
        how = f"forked at event {s.fork_seq}" if s.fork_seq else "re-reviews the drafts of"
        parts.append(f'<p class="parent">Parent: {run_link(s.parent_run_id)} ({e(how)}) &middot; '
                     f'<a href="{e(compare_url(s.parent_run_id, s.run_id))}">compare with parent</a></p>')
    if len(ancestors) > 1:
        chain = " &larr; ".join(run_link(a.run_id) for a in ancestors)
        parts.append(f'<p class="ancestors muted">Ancestors: {chain}</p>')
    if children:
        items = "".join(
            f'<li>{run_link(c.run_id)} {badge(c.status)} '
            f'{e(f"forked at event {c.fork_seq}" if c.fork_seq else "re-review")}'
            f'{e(f", score {c.score}" if c.score is not None else "")} &middot; '
            f'<a href="{e(compare_url(s.run_id, c.run_id))}">compare</a></li>' for c in children)
        parts.append(f'<p>Forks and re-reviews of this run:</p><ul class="children">{items}</ul>')
    return "".join(parts) or '<p class="muted">No parent, no forks.</p>'


def _agents(run: RunPage) -> str:
    view = run.view
    if not view.agents:
        return '<p class="muted">No agents recorded.</p>'
    rows = "".join(f"<tr><td>{e(name)}</td><td><code>{e(c.model)}</code></td><td class=\"num\">{c.temperature}</td>"
                   f"<td>{e('default' if c.system_prompt is None else 'custom')}</td></tr>"
                   for name, c in view.agents.items())
    settings = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in run.settings.items())
    changes = "".join(f"<li>event {seq}: {e(what)}</li>" for seq, what in run.changes)
    return (f"<table><thead><tr><th>agent</th><th>model</th><th class=\"num\">temperature</th><th>prompt</th></tr>"
            f"</thead><tbody>{rows}</tbody></table><p class=\"muted\">{e(settings)}</p>"
            + (f"<p>Changed during the run:</p><ul class=\"changes\">{changes}</ul>" if changes else ""))


def sections(run: RunPage) -> dict[str, str]:
    """The parts of a run page that change as a run goes on, by element id (live updates replace them)."""
    view = run.view
    chart = score_chart([(run.summary.run_id[:8], run.scores)], view.threshold)
    return {"scores": f"<h2>Score by iteration</h2>{chart}", "drafts": f"<h2>Drafts</h2>{_drafts(view)}",
            "reviews": f"<h2>Reviews</h2>{_reviews(view)}", "findings": f"<h2>Findings</h2>{_findings(view)}"}


def _drafts(view: RunView) -> str:
    if not view.drafts:
        return '<p class="muted">No drafts yet.</p>'
    out = []
    for n, d in enumerate(view.drafts):
        last = n == len(view.drafts) - 1
        source = f' <span class="muted">copied from {run_link(d.source.run_id)} event {d.source.seq}</span>' \
            if d.source else ""
        diff = ""
        if n:
            prev = view.drafts[n - 1]
            added, removed = diff_stats(prev.draft, d.draft)
            diff = (f'<details class="diff" open><summary>Changes since draft {prev.iteration}: '
                    f'+{added} &minus;{removed} lines</summary>'
                    f'{diff_html(prev.draft, d.draft, f"draft {prev.iteration}", f"draft {d.iteration}")}</details>')
        out.append(f'<article class="draft" id="draft-{d.iteration}" data-iteration="{d.iteration}">'
                   f'<h3>Draft {d.iteration} <span class="muted">(event {d.seq})</span>{source}</h3>{diff}'
                   f'<details class="text"{" open" if last else ""}><summary>Full text '
                   f'({len(d.draft):,} characters)</summary><pre class="draft">{e(d.draft)}</pre></details></article>')
    return "".join(out)


def _reviews(view: RunView) -> str:
    if not view.reviews:
        return '<p class="muted">No reviews yet.</p>'
    out = []
    for r in view.reviews:
        rv = r.review
        verdict = "approved" if rv.approved else "not approved"
        lists = "".join(
            f'<h3>{title}</h3><ul class="{cls}">' + "".join(f"<li>{e(item)}</li>" for item in items) + "</ul>"
            for title, cls, items in (("Issues", "issues", rv.issues), ("Missed topics", "missed", rv.missed_topics),
                                      ("Suggestions", "suggestions", rv.suggestions)) if items)
        out.append(f'<article class="review{" approved" if rv.approved else ""}" data-iteration="{r.iteration}">'
                   f'<h3>Review of draft {r.iteration}: score {rv.score}/10, {verdict} '
                   f'<span class="muted">(event {r.seq})</span></h3><p>{e(rv.summary)}</p>{lists}</article>')
    return "".join(out)


def _findings(view: RunView) -> str:
    f = view.findings
    if f is None:
        return '<p class="muted">No findings yet.</p>'

    def items(values: list[str]) -> str:
        return "<ul>" + "".join(f"<li>{e(v)}</li>" for v in values) + "</ul>" if values else \
            '<p class="muted">none</p>'

    facts = "".join(f"<h3>{e(a.area)}</h3>{items(a.facts)}" for a in f.facts)
    return (f"<h3>Key areas</h3>{items(f.key_areas)}{facts}<h3>Misconceptions</h3>{items(f.misconceptions)}"
            f"<h3>Sources</h3>{items(f.sources)}")


def timeline_row(r: TimelineRow, run: RunPage) -> str:
    start = run.view.timeline[0].recorded_at if run.view.timeline else r.recorded_at
    if r.reused:
        answer = '<span class="badge reused">reused</span>'
    elif r.live:
        answer = '<span class="badge live">live</span>'
    else:
        answer = ""
    if r.copied:
        answer += ' <span class="badge copied" title="copied from the parent run">copied</span>'
    detail = e(r.description)
    if r.link_run:
        detail += f' &middot; {run_link(r.link_run, "open")}'
    latency = f"{r.latency_ms:,.0f} ms" if r.latency_ms is not None else ""
    tokens = number(r.tokens) if r.type == "LLMCallAnswered" else ""
    return (f'<tr class="event{" copied" if r.copied else ""}" data-seq="{r.seq}" data-type="{e(r.type)}">'
            f'<td class="num">{r.seq}</td><td class="mono" title="{e(when(r.recorded_at))}">'
            f'+{r.recorded_at - start:.3f}s</td><td>{e(r.type)}</td><td>{e(r.step)}</td><td>{e(r.agent)}</td>'
            f'<td><code>{e(r.model)}</code></td><td class="num">{latency}</td><td class="num">{tokens}</td>'
            f'<td class="answer">{answer}</td><td class="detail">{detail}</td></tr>')


def damaged_row(run: RunPage) -> str:
    """The timeline row that marks the event that cannot be read ("" if there is none)."""
    if run.damage is None:
        return ""
    return (f'<tr class="event damaged" data-seq="{run.damage.seq}" data-type="damaged">'
            f'<td class="num">{run.damage.seq}</td><td></td><td>damaged</td><td></td><td></td><td></td>'
            f'<td class="num"></td><td class="num"></td><td class="answer"></td>'
            f'<td class="detail">cannot be read: {e(run.damage.reason)}</td></tr>')


# --- compare page ------------------------------------------------------------------


def compare_form(a: str, b: str, error: str = "") -> str:
    err = f'<p class="error">{e(error)}</p>' if error else ""
    return f"""<h1>Compare two runs</h1>{err}
<form class="filters" method="get" action="/compare">
<input type="search" name="a" value="{e(a)}" placeholder="run id (or prefix)" aria-label="run a">
<input type="search" name="b" value="{e(b)}" placeholder="run id (or prefix)" aria-label="run b">
<button type="submit">Compare</button></form>"""


def compare_page(a: RunPage, b: RunPage) -> str:
    sa, sb = a.summary, b.summary
    relation = ""
    if sb.parent_run_id == sa.run_id or sa.parent_run_id == sb.run_id:
        child, parent = (sb, sa) if sb.parent_run_id == sa.run_id else (sa, sb)
        how = f"was forked from {parent.run_id} at event {child.fork_seq}" if child.fork_seq \
            else f"re-reviews the drafts of {parent.run_id}"
        relation = f'<p class="relation">{e(child.run_id)} {e(how)}.</p>'
    table = config_table(a, b)

    def config_rows(cls: str, rows: list[tuple[str, str, str]]) -> str:
        return "".join(f'<tr class="{cls}"><td><code>{e(k)}</code></td><td>{e(va)}</td><td>{e(vb)}</td></tr>'
                       for k, va, vb in rows)

    differs = config_rows("differs", [r for r in table if r[1] != r[2]]) or \
        '<tr><td colspan="3" class="muted">The two runs are configured alike.</td></tr>'
    same = [r for r in table if r[1] == r[2]]
    iterations = sorted(set(a.scores) | set(b.scores))
    score_rows = "".join(f'<tr><td class="num">{i}</td><td class="num">{a.scores.get(i, "")}</td>'
                         f'<td class="num">{b.scores.get(i, "")}</td></tr>' for i in iterations) or \
        '<tr><td colspan="3" class="muted">No scores.</td></tr>'
    threshold = a.view.threshold
    chart = score_chart([(f"A {sa.run_id[:8]}", a.scores), (f"B {sb.run_id[:8]}", b.scores)],
                        threshold if threshold == b.view.threshold else None)
    if a.view.drafts and b.view.drafts:
        fa, fb = a.view.drafts[-1], b.view.drafts[-1]
        added, removed = diff_stats(fa.draft, fb.draft)
        drafts = (f"<p>A's draft {fa.iteration} &rarr; B's draft {fb.iteration}: +{added} &minus;{removed} lines</p>"
                  + diff_html(fa.draft, fb.draft, f"A {sa.run_id} draft {fa.iteration}",
                              f"B {sb.run_id} draft {fb.iteration}"))
    else:
        drafts = '<p class="muted">One of the runs has no draft yet.</p>'
    return f"""{compare_form(sa.run_id, sb.run_id)}
{relation}
<table class="pair"><thead><tr><th></th><th>run</th><th>task</th><th>pipeline</th><th>status</th>
<th class="num">score</th><th class="num">iterations</th><th class="num">tokens</th></tr></thead><tbody>
{_pair_row("A", sa)}{_pair_row("B", sb)}</tbody></table>
<section id="config"><h2>Configuration</h2>
<table><thead><tr><th>setting</th><th>A</th><th>B</th></tr></thead><tbody>{differs}</tbody></table>
<details class="same"><summary>{len(same)} settings the same in both</summary>
<table><tbody>{config_rows("same", same)}</tbody></table></details>
<div class="cols"><div><h3>Changes recorded in A</h3>{_changes(a)}</div>
<div><h3>Changes recorded in B</h3>{_changes(b)}</div></div></section>
<section id="scores"><h2>Scores by iteration</h2><div class="cols"><div>
<table class="scores"><thead><tr><th class="num">iteration</th><th class="num">A</th><th class="num">B</th></tr></thead>
<tbody>{score_rows}</tbody></table></div><div>{chart}</div></div></section>
<section id="final-drafts"><h2>Final drafts</h2>{drafts}</section>"""


def _pair_row(label: str, s: RunSummary) -> str:
    return (f"<tr><th>{label}</th><td>{run_link(s.run_id)}</td><td class=\"task-cell\">{e(s.task)}</td>"
            f"<td>{e(s.pipeline)}</td><td>{badge(s.status)}</td><td class=\"num\">{number(s.score)}</td>"
            f"<td class=\"num\">{s.iterations}</td><td class=\"num\">{number(s.tokens)}</td></tr>")


def _changes(run: RunPage) -> str:
    if not run.changes:
        return '<p class="muted">none</p>'
    return "<ul>" + "".join(f"<li>event {seq}: {e(what)}</li>" for seq, what in run.changes) + "</ul>"


def error_page(message: str) -> str:
    return f'<h1>Not found</h1><p class="error">{e(message)}</p><p><a href="/">All runs</a></p>'


# --- sweeps --------------------------------------------------------------------------


def sweep_url(sweep_id: str) -> str:
    return "/sweeps/" + quote(sweep_id, safe="")


def _usd(value: float | None) -> str:
    return "unknown" if value is None else f"${value:,.4f}"


def _fmt(value: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if value is None else fmt.format(value)


def sweeps_page(infos: list) -> str:
    rows = "".join(
        f'<tr class="sweep" data-sweep-id="{e(i.sweep_id)}"><td><a href="{e(sweep_url(i.sweep_id))}"><code>'
        f'{e(i.sweep_id)}</code></a></td><td class="when">{when(i.created_at)}</td><td>{e(i.at or "fresh tasks")}</td>'
        f'<td class="num">{i.sources}</td><td>{e(", ".join(i.variants))}</td><td class="num">{i.samples}</td>'
        f'<td class="num">{i.members}/{i.expected}</td><td class="num">{i.finished}</td><td class="num">{i.failed}</td></tr>'
        for i in infos) or '<tr><td colspan="9" class="muted empty">No sweeps yet: <code>agentlog sweep RUN... ' \
        '--at STEP --model AGENT=A,B</code> makes one.</td></tr>'
    return f"""<h1>Sweeps</h1>
<table class="sweeps"><thead><tr><th>sweep</th><th>started</th><th>branch point</th><th class="num">runs</th>
<th>variants</th><th class="num">samples</th><th class="num">members</th><th class="num">finished</th>
<th class="num">failed</th></tr></thead><tbody>{rows}</tbody></table>"""


def sweep_page(c) -> str:  # noqa: ANN001 - agentlog.replay.compare.Comparison
    from .sweepcharts import cost_vs_score, score_change, score_distribution

    spec = c.spec
    labels = [v.label for v in spec.variants]
    what = f"{len(spec.runs)} run(s) branched at {spec.at}" if spec.runs else f"{len(spec.tasks)} fresh task(s)"
    variant_rows = "".join(
        f'<tr class="variant" data-variant="{e(v.variant)}"><td>{e(v.variant)}</td><td class="num">{v.runs}</td>'
        f'<td class="num">{_fmt(v.mean_score)} ± {_fmt(v.sd_score)}</td>'
        f'<td class="num">{_fmt(v.min_score, "{}")}&ndash;{_fmt(v.max_score, "{}")}</td>'
        f'<td class="num">{_fmt(v.mean_delta, "{:+.2f}")}</td>'
        f'<td class="num">{_fmt(None if v.approval_rate is None else v.approval_rate * 100, "{:.0f}%")}</td>'
        f'<td class="num">{_fmt(v.mean_iterations, "{:.1f}")}</td><td class="num">{number(v.tokens_spent)}</td>'
        f'<td class="num">{number(v.tokens_reused)}</td><td class="num">{e(_usd(v.cost_usd))}</td>'
        f'<td class="num">{e(_usd(v.saved_usd))}</td><td class="num">{_fmt(v.mean_latency_s, "{:.2f} s")}</td>'
        f'<td class="num">{v.failed or ""}</td></tr>' for v in c.variants)
    unpriced = sorted({u for v in c.variants for u in v.unpriced})
    unpriced_note = (f'<p class="muted">Cost unknown: no price for {e(", ".join(unpriced))} (add it to the config '
                     f"file's <code>[prices]</code> table).</p>") if unpriced else ""
    heads = "".join(f"<th>{e(label)}</th>" for label in labels)
    disagree = "".join(
        f'<tr class="disagreement"><td>{run_link(d.source) if spec.runs else e(d.source)}</td>'
        f'<td class="num">{d.sample}</td><td class="num">{_fmt(d.parent_score, "{}")}</td>'
        + "".join(f'<td class="num">{_fmt(d.scores.get(label), "{}")}'
                  f'{" ✓" if d.approved.get(label) else ""}</td>' for label in labels) + "</tr>"
        for d in c.disagreements) or f'<tr><td colspan="{3 + len(labels)}" class="muted">The variants agree on ' \
        f'every run.</td></tr>'
    members = "".join(
        f'<tr class="member" data-run-id="{e(m.run_id)}"><td>{run_link(m.run_id)}</td><td>{e(m.variant)}</td>'
        f'<td class="num">{m.sample}</td><td>{run_link(m.parent_run_id) if m.parent_run_id else e(m.source)}</td>'
        f'<td>{badge(m.status)}</td><td class="num">{_fmt(m.score, "{}")}</td>'
        f'<td class="num">{_fmt(m.delta, "{:+d}")}</td><td class="num">{number(m.spent_tokens)}</td>'
        f'<td class="num">{number(m.reused_tokens)}</td><td class="num">{e(_usd(m.spent_usd))}</td></tr>'
        for m in c.members)
    index = {label: n for n, label in enumerate(labels)}
    distribution = score_distribution([(v.variant, [m.score for m in c.members if m.variant == v.variant
                                                    and m.score is not None]) for v in c.variants])
    priced = all(m.spent_usd is not None for m in c.members)
    x_label = "cost spent (USD)" if priced else "tokens spent (a price is unknown)"
    points = [(index.get(m.variant, 0), m.run_id, float(m.spent_usd if priced else m.spent_tokens), m.score)
              for m in c.members if m.score is not None]
    by_source: dict[tuple[str, int], list] = {}
    for m in c.members:
        by_source.setdefault((m.source, m.sample), []).append(m)
    change_rows = [(source[:16] + (f" #{sample}" if spec.samples > 1 else ""), ms[0].parent_score,
                    [(index.get(m.variant, 0), m.score) for m in ms]) for (source, sample), ms in by_source.items()]
    return f"""<div class="sweep-page" data-sweep-id="{e(c.sweep_id)}">
<h1>Sweep <code>{e(c.sweep_id)}</code></h1>
<p>{e(what)} &times; {len(labels)} variant(s) &times; {spec.samples} sample(s) = {c.expected} runs
({len(c.members)} recorded)</p>
<p class="paired">{e(c.paired)}</p>
<section id="comparison"><h2>Comparison by variant</h2>
<table class="comparison"><thead><tr><th>variant</th><th class="num">runs</th><th class="num">score (mean ± sd)</th>
<th class="num">range</th><th class="num">&Delta; vs parent</th><th class="num">approved</th><th class="num">iterations</th>
<th class="num">tokens</th><th class="num">reused</th><th class="num">cost</th><th class="num">saved by reuse</th>
<th class="num">latency</th><th class="num">failed</th></tr></thead><tbody>{variant_rows}</tbody></table>{unpriced_note}
</section>
<div class="cols">
<section id="distribution"><h2>Final score per variant</h2>{distribution}</section>
<section id="cost-score"><h2>Cost against score per run</h2>{cost_vs_score(points, labels, x_label)}</section>
</div>
<section id="score-change"><h2>Parent &rarr; fork score per run</h2>{score_change(change_rows, labels)}</section>
<section id="disagreements"><h2>Where the variants disagree</h2>
<table><thead><tr><th>run</th><th class="num">sample</th><th class="num">parent</th>{heads}</tr></thead>
<tbody>{disagree}</tbody></table><p class="muted">✓ approved</p></section>
<section id="members"><h2>Runs</h2>
<table><thead><tr><th>run</th><th>variant</th><th class="num">sample</th><th>parent</th><th>status</th>
<th class="num">score</th><th class="num">&Delta;</th><th class="num">tokens</th><th class="num">reused</th>
<th class="num">cost</th></tr></thead><tbody>{members}</tbody></table></section>
</div>"""
