"""Score-by-iteration charts as inline SVG, drawn server-side (no script, no style attributes)."""

from __future__ import annotations

from html import escape

WIDTH, HEIGHT = 420, 220
LEFT, RIGHT, TOP, BOTTOM = 36, 16, 14, 32
COLORS = ("#2563eb", "#dc2626", "#059669", "#9333ea")


def score_chart(series: list[tuple[str, dict[int, int]]], threshold: int | None = None) -> str:
    """One line per (label, {iteration: score}); scores run 1-10, iterations from 1."""
    series = [(label, scores) for label, scores in series if scores]
    if not series:
        return '<p class="muted">No scores yet.</p>'
    last = max(max(scores) for _, scores in series)
    span = max(last - 1, 1)
    top = TOP + (18 if len(series) > 1 else 0)  # a band for the legend, above the plot

    def x(iteration: int) -> float:
        return LEFT + (iteration - 1) * (WIDTH - LEFT - RIGHT) / span if last > 1 else (LEFT + WIDTH - RIGHT) / 2

    def y(score: float) -> float:
        return top + (10 - score) * (HEIGHT - top - BOTTOM) / 9

    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
             f'role="img" aria-label="score by iteration">']
    for score in (1, 4, 7, 10):
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(score):.1f}" y2="{y(score):.1f}" '
                     f'stroke="#e5e7eb"/>'
                     f'<text x="{LEFT - 6}" y="{y(score) + 4:.1f}" text-anchor="end" font-size="11" '
                     f'fill="#6b7280">{score}</text>')
    for iteration in range(1, last + 1):
        parts.append(f'<text x="{x(iteration):.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" '
                     f'font-size="11" fill="#6b7280">{iteration}</text>')
    parts.append(f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - 4}" text-anchor="middle" font-size="11" '
                 f'fill="#6b7280">iteration</text>')
    if threshold is not None:
        parts.append(f'<line class="threshold" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(threshold):.1f}" '
                     f'y2="{y(threshold):.1f}" stroke="#f59e0b" stroke-dasharray="4 3"/>')
    for n, (label, scores) in enumerate(series):
        color = COLORS[n % len(COLORS)]
        points = sorted(scores.items())
        path = " ".join(f"{x(i):.1f},{y(s):.1f}" for i, s in points)
        parts.append(f'<g class="series" data-label="{escape(label)}">'
                     f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        for i, s in points:
            parts.append(f'<circle class="point" data-iteration="{i}" data-score="{s}" cx="{x(i):.1f}" '
                         f'cy="{y(s):.1f}" r="4" fill="{color}"><title>{escape(label)}: iteration {i}, '
                         f'score {s}</title></circle>')
        parts.append("</g>")
    if len(series) > 1:
        for n, (label, _) in enumerate(series):
            lx = LEFT + n * 130
            parts.append(f'<rect x="{lx}" y="4" width="10" height="10" fill="{COLORS[n % len(COLORS)]}"/>'
                         f'<text x="{lx + 15}" y="13" font-size="11" fill="#111827">{escape(label[:18])}</text>')
    parts.append("</svg>")
    return "".join(parts)
