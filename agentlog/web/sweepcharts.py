"""A sweep's pictures as inline SVG, drawn server-side like the score chart: the score
distribution per variant, cost against score per run, and the parent -> fork score change.

Presentation attributes only (the CSP allows no style attributes); every label escaped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from html import escape

from .chart import COLORS

WIDTH = 560
LEFT, RIGHT, TOP, BOTTOM = 150, 20, 16, 34
GRID, MUTED, TEXT = "#e5e7eb", "#6b7280", "#111827"


def _color(n: int) -> str:
    return COLORS[n % len(COLORS)]


def _svg(cls: str, height: int, label: str, body: list[str]) -> str:
    return (f'<svg class="chart {cls}" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" '
            f'role="img" aria-label="{escape(label)}">' + "".join(body) + "</svg>")


def _score_axis(height: int, top: int) -> tuple[list[str], Callable[[float], float]]:
    def x(score: float) -> float:
        return LEFT + (score - 1) * (WIDTH - LEFT - RIGHT) / 9

    parts = []
    for s in range(1, 11):
        parts.append(f'<line x1="{x(s):.1f}" x2="{x(s):.1f}" y1="{top}" y2="{height - BOTTOM}" stroke="{GRID}"/>'
                     f'<text x="{x(s):.1f}" y="{height - BOTTOM + 15}" text-anchor="middle" font-size="11" '
                     f'fill="{MUTED}">{s}</text>')
    parts.append(f'<text x="{(LEFT + WIDTH - RIGHT) / 2:.0f}" y="{height - 4}" text-anchor="middle" font-size="11" '
                 f'fill="{MUTED}">final score</text>')
    return parts, x


def _label(text: str, y: float, color: str = TEXT) -> str:
    short = text if len(text) <= 24 else text[:23] + "…"
    return (f'<text x="{LEFT - 8}" y="{y + 4:.1f}" text-anchor="end" font-size="11" fill="{color}">'
            f'<title>{escape(text)}</title>{escape(short)}</text>')


def score_distribution(variants: Sequence[tuple[str, Sequence[int]]]) -> str:
    """One row per variant: a dot per run's final score, and the mean as a bar."""
    if not any(scores for _, scores in variants):
        return '<p class="muted">No scores yet.</p>'
    row = 34
    height = TOP + row * len(variants) + BOTTOM
    parts, x = _score_axis(height, TOP)
    for n, (label, scores) in enumerate(variants):
        mid = TOP + row * n + row / 2
        parts.append(_label(label, mid))
        counts: dict[int, int] = {}
        for score in scores:
            k = counts.get(score, 0)
            counts[score] = k + 1
            dy = (k % 5 - 2) * 4  # equal scores are spread vertically, not hidden behind each other
            parts.append(f'<circle class="dot" data-variant="{escape(label)}" data-score="{score}" cx="{x(score):.1f}" '
                         f'cy="{mid + dy:.1f}" r="4" fill="{_color(n)}" fill-opacity="0.75">'
                         f'<title>{escape(label)}: score {score}</title></circle>')
        if scores:
            mean = sum(scores) / len(scores)
            parts.append(f'<line class="mean" x1="{x(mean):.1f}" x2="{x(mean):.1f}" y1="{mid - 12:.1f}" '
                         f'y2="{mid + 12:.1f}" stroke="{TEXT}" stroke-width="2"><title>{escape(label)}: mean '
                         f'{mean:.2f}</title></line>')
    return _svg("distribution", height, "final score per variant", parts)


def cost_vs_score(points: Sequence[tuple[int, str, float, int]], labels: Sequence[str], x_label: str) -> str:
    """A dot per run: ``(variant index, run id, cost or tokens, final score)``."""
    if not points:
        return '<p class="muted">No scored runs yet.</p>'
    height, left = 260, 48
    top = TOP + 18 * ((len(labels) + 2) // 3)  # the legend, three labels a line
    most = max(p[2] for p in points) or 1.0

    def x(value: float) -> float:
        return left + value * (WIDTH - left - RIGHT) / most

    def y(score: float) -> float:
        return top + (10 - score) * (height - top - BOTTOM) / 9

    parts = []
    for s in (1, 4, 7, 10):
        parts.append(f'<line x1="{left}" x2="{WIDTH - RIGHT}" y1="{y(s):.1f}" y2="{y(s):.1f}" stroke="{GRID}"/>'
                     f'<text x="{left - 6}" y="{y(s) + 4:.1f}" text-anchor="end" font-size="11" fill="{MUTED}">{s}</text>')
    for frac in (0, 0.5, 1):
        value = most * frac
        text = f"${value:,.4f}" if x_label.startswith("cost") else f"{value:,.0f}"
        parts.append(f'<text x="{x(value):.1f}" y="{height - BOTTOM + 15}" text-anchor="middle" font-size="11" '
                     f'fill="{MUTED}">{text}</text>')
    parts.append(f'<text x="{(left + WIDTH - RIGHT) / 2:.0f}" y="{height - 4}" text-anchor="middle" font-size="11" '
                 f'fill="{MUTED}">{escape(x_label)}</text>')
    for n, label in enumerate(labels):
        lx, ly = left + (n % 3) * 170, 4 + 18 * (n // 3)
        parts.append(f'<rect x="{lx}" y="{ly}" width="10" height="10" fill="{_color(n)}"/>'
                     f'<text x="{lx + 15}" y="{ly + 9}" font-size="11" fill="{TEXT}">{escape(label[:24])}</text>')
    for variant, run_id, value, score in points:
        parts.append(f'<circle class="run" data-run-id="{escape(run_id)}" data-score="{score}" cx="{x(value):.1f}" '
                     f'cy="{y(score):.1f}" r="5" fill="{_color(variant)}" fill-opacity="0.8">'
                     f'<title>{escape(run_id)} ({escape(labels[variant])}): score {score}, {escape(x_label)} '
                     f'{value:,.4f}</title></circle>')
    return _svg("cost-score", height, f"{x_label} against final score per run", parts)


def score_change(rows: Sequence[tuple[str, int | None, Sequence[tuple[int, int | None]]]],
                 labels: Sequence[str]) -> str:
    """One row per parent run (and sample): its score (hollow) and each variant's fork score,
    joined by a line, so a change shows as its length and direction."""
    rows = [r for r in rows if r[1] is not None or any(score is not None for _, score in r[2])]
    if not rows:
        return '<p class="muted">No scores yet.</p>'
    row = 26
    height = TOP + row * len(rows) + BOTTOM
    parts, x = _score_axis(height, TOP)
    for i, (source, parent, forks) in enumerate(rows):
        mid = TOP + row * i + row / 2
        parts.append(_label(source, mid, MUTED))
        for variant, score in forks:
            if score is None:
                continue
            dy = (variant - (len(labels) - 1) / 2) * 3
            if parent is not None:
                parts.append(f'<line x1="{x(parent):.1f}" x2="{x(score):.1f}" y1="{mid:.1f}" y2="{mid + dy:.1f}" '
                             f'stroke="{_color(variant)}" stroke-width="2"/>')
            parts.append(f'<circle class="fork" data-variant="{escape(labels[variant])}" data-score="{score}" '
                         f'cx="{x(score):.1f}" cy="{mid + dy:.1f}" r="4" fill="{_color(variant)}">'
                         f'<title>{escape(labels[variant])}: {parent if parent is not None else "-"} → {score}'
                         f'</title></circle>')
        if parent is not None:
            parts.append(f'<circle class="parent" data-score="{parent}" cx="{x(parent):.1f}" cy="{mid:.1f}" r="5" '
                         f'fill="#fff" stroke="{TEXT}" stroke-width="1.5"><title>parent: {parent}</title></circle>')
    return _svg("score-change", height, "parent to fork score change per run", parts)
