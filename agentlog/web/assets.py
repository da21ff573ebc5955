"""The viewer's only stylesheet and script, served from /static (the CSP allows nothing inline)."""

CSS = """
:root { --fg: #111827; --muted: #6b7280; --line: #e5e7eb; --bg: #f9fafb; --accent: #2563eb; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: #fff; }
header.top { display: flex; gap: 1.5rem; align-items: baseline; padding: .6rem 1.5rem; background: #111827; color: #fff; }
header.top a { color: #fff; text-decoration: none; }
header.top .brand { font-weight: 700; font-size: 1.1rem; }
header.top .db { margin-left: auto; color: #9ca3af; font-size: .8rem; }
main { padding: 1rem 1.5rem 3rem; max-width: 1200px; }
h1 { font-size: 1.35rem; margin: .4rem 0 .6rem; }
h2 { font-size: 1.1rem; margin: 1.6rem 0 .5rem; border-bottom: 1px solid var(--line); padding-bottom: .2rem; }
h3 { font-size: .95rem; margin: 1rem 0 .3rem; }
a { color: var(--accent); }
code, pre, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: .85rem; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .3rem .5rem; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: var(--bg); font-weight: 600; font-size: .8rem; color: #374151; white-space: nowrap; }
td.num, th.num { text-align: right; white-space: nowrap; }
.muted { color: var(--muted); }
.filters { display: flex; gap: .5rem; align-items: center; margin: .5rem 0 1rem; }
.filters input[type=search] { width: 22rem; padding: .3rem .5rem; }
.filters select, .filters button { padding: .3rem .5rem; }
.pager { display: flex; gap: 1rem; margin-top: 1rem; align-items: center; }
.badge { display: inline-block; padding: 0 .45rem; border-radius: 999px; font-size: .75rem; font-weight: 600; }
.badge.running { background: #dbeafe; color: #1d4ed8; }
.badge.queued { background: #f3f4f6; color: #374151; }
.badge.finished { background: #dcfce7; color: #15803d; }
.badge.failed { background: #fee2e2; color: #b91c1c; }
.badge.waiting { background: #ffedd5; color: #c2410c; }
section.decision { border: 2px solid #fdba74; background: #fff7ed; border-radius: 8px; padding: .2rem 1rem 1rem;
  margin: 1rem 0; }
section.decision h2 { border-bottom: none; }
section.decision form { display: flex; flex-direction: column; gap: .4rem; }
section.decision label { display: flex; flex-direction: column; font-size: .8rem; color: #374151; gap: .15rem; }
section.decision input[type=text], section.decision textarea { font: inherit; padding: .3rem .4rem; width: 100%; }
section.decision textarea[name=draft] { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  font-size: .85rem; }
section.decision button { align-self: flex-start; padding: .35rem .8rem; font-weight: 600; cursor: pointer; }
section.decision form.edit { margin-top: 1rem; }
.badge.reused { background: #f3e8ff; color: #7e22ce; }
.badge.live { background: #fef3c7; color: #92400e; }
.badge.copied { background: #e5e7eb; color: #374151; }
.task-cell { max-width: 28rem; overflow-wrap: anywhere; }
.summary { display: flex; flex-wrap: wrap; gap: .5rem; margin: .5rem 0; }
.summary div { background: var(--bg); border: 1px solid var(--line); border-radius: 6px; padding: .35rem .7rem; min-width: 6rem; }
.summary dt { font-size: .72rem; color: var(--muted); text-transform: uppercase; letter-spacing: .03em; }
.summary dd { margin: 0; font-weight: 600; overflow-wrap: anywhere; }
.task { font-size: 1rem; white-space: pre-wrap; overflow-wrap: anywhere; }
.cols { display: flex; gap: 2rem; flex-wrap: wrap; align-items: flex-start; }
.cols > * { flex: 1 1 20rem; min-width: 0; }
td.when { white-space: nowrap; }
tr.copied td { color: var(--muted); }
tr.damaged td { background: #fee2e2; }
#timeline td.detail { overflow-wrap: anywhere; max-width: 36rem; }
#timeline td.answer, #timeline td code { white-space: nowrap; }
pre.draft, pre.diff { background: var(--bg); border: 1px solid var(--line); border-radius: 6px; padding: .6rem .8rem;
  white-space: pre-wrap; overflow-wrap: anywhere; max-height: 32rem; overflow: auto; margin: .3rem 0; }
pre.diff span { display: block; }
pre.diff .add { background: #dcfce7; }
pre.diff .del { background: #fee2e2; }
pre.diff .hunk { color: #7e22ce; }
pre.diff .file { color: var(--muted); }
details > summary { cursor: pointer; color: #374151; margin: .2rem 0; }
article.draft, article.review { border-left: 3px solid var(--line); padding-left: .8rem; margin: .8rem 0; }
article.review.approved { border-left-color: #16a34a; }
ul { margin: .2rem 0; padding-left: 1.3rem; }
.lineage li { margin: .15rem 0; }
tr.differs td { background: #fff7ed; }
table.scores { width: auto; min-width: 16rem; }
#config table { table-layout: fixed; }
.error { background: #fee2e2; border: 1px solid #fecaca; padding: .6rem .8rem; border-radius: 6px; }
.livenote { font-size: .8rem; color: #1d4ed8; }
.streaming .partial h3 { font-size: .85rem; margin: .6rem 0 .2rem; color: #1d4ed8; }
.streaming .partial pre { white-space: pre-wrap; max-height: 16rem; overflow: auto; background: #fff;
  border: 1px dashed #93c5fd; border-radius: 6px; padding: .5rem .7rem; margin: 0; }
svg.chart { max-width: 100%; height: auto; background: #fff; border: 1px solid var(--line); border-radius: 6px; }
"""

# Polls for events after the last one shown (at once when the stream says some were appended);
# stops once the run is no longer running.
JS = """
(function () {
  "use strict";
  var root = document.querySelector("[data-live-url]");
  if (!root) { return; }
  var url = root.getAttribute("data-live-url");
  var after = parseInt(root.getAttribute("data-last-seq"), 10) || 0;
  var delay = 1000, timer = null, busy = false, stopped = false;
  function replace(id, html) {
    var el = document.getElementById(id);
    if (el && typeof html === "string") { el.innerHTML = html; }
  }
  function later(ms) { clearTimeout(timer); timer = setTimeout(tick, ms); }
  // The stream says when events were appended: fetch them now, not at the next poll.
  document.addEventListener("agentlog:appended", function () { if (!busy && !stopped) { later(0); } });
  function tick() {
    busy = true;
    fetch(url + "?after=" + after, { cache: "no-store", headers: { "Accept": "application/json" } })
      .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.json(); })
      .then(function (d) {
        if (d.last_seq > after) {
          var body = document.querySelector("#timeline tbody");
          body.insertAdjacentHTML("beforeend", d.rows);
          replace("summary", d.summary);
          Object.keys(d.sections).forEach(function (id) { replace(id, d.sections[id]); });
          after = d.last_seq;
          delay = 1000;
        } else {
          delay = Math.min(delay * 1.5, 5000);
        }
        busy = false;
        if (d.status === "waiting") { window.location.reload(); return; }  // show the decision form
        if (d.status !== "running" && d.status !== "queued") {
          stopped = true;
          replace("summary", d.summary);
          var note = document.getElementById("livenote");
          if (note) { note.textContent = "run " + d.status + "; live updates stopped"; }
          return;
        }
        later(delay);
      })
      .catch(function () { busy = false; delay = Math.min(delay * 2, 10000); later(delay); });
  }
  later(delay);
})();

// Answers as they stream (server-sent events); shown as text, never as HTML.
(function () {
  "use strict";
  var root = document.querySelector("[data-stream-url]");
  var box = document.getElementById("streaming");
  if (!root || !box || !window.EventSource) { return; }
  var source = new EventSource(root.getAttribute("data-stream-url"));
  source.addEventListener("partials", function (ev) {
    var list = JSON.parse(ev.data);
    box.textContent = "";
    list.forEach(function (p) {
      var part = document.createElement("div");
      part.className = "partial";
      part.setAttribute("data-call", p.call_id);
      var head = document.createElement("h3");
      head.textContent = p.agent + " is answering (call " + p.call_id +
        (p.attempt > 1 ? ", attempt " + p.attempt : "") + ", " + p.pieces + " tokens so far)";
      var text = document.createElement("pre");
      text.textContent = p.text;
      part.appendChild(head);
      part.appendChild(text);
      box.appendChild(part);
    });
  });
  source.addEventListener("appended", function () {
    document.dispatchEvent(new CustomEvent("agentlog:appended"));
  });
  source.addEventListener("end", function () { source.close(); box.textContent = ""; });
})();
"""

ICON = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" '
        'fill="#111827"/><path d="M4 4h8M4 8h8M4 12h5" stroke="#fff" stroke-width="2"/></svg>')
