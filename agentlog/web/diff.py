"""Line diffs of drafts, rendered as escaped HTML."""

from __future__ import annotations

import difflib
from html import escape


def diff_html(old: str, new: str, old_label: str, new_label: str, context: int = 3) -> str:
    """A unified diff of two texts as a ``<pre>`` whose lines are marked added, removed or kept."""
    lines = list(difflib.unified_diff(old.splitlines(), new.splitlines(), old_label, new_label,
                                      n=context, lineterm=""))
    if not lines:
        return '<p class="muted nodiff">No changes.</p>'
    out = []
    for line in lines:
        if line.startswith(("---", "+++")):
            cls = "file"
        elif line.startswith("@@"):
            cls = "hunk"
        elif line.startswith("+"):
            cls = "add"
        elif line.startswith("-"):
            cls = "del"
        else:
            cls = "ctx"
        out.append(f'<span class="{cls}">{escape(line)}</span>')
    # Each line is a block span: no newline between them, or every line would show twice as tall.
    return '<pre class="diff">' + "".join(out) + "</pre>"


def diff_stats(old: str, new: str) -> tuple[int, int]:
    """(lines added, lines removed) going from ``old`` to ``new``."""
    added = removed = 0
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old.splitlines(), new.splitlines()).get_opcodes():
        if tag in ("replace", "delete"):
            removed += i2 - i1
        if tag in ("replace", "insert"):
            added += j2 - j1
    return added, removed
