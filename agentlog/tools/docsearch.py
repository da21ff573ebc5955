"""Full-text search over a folder of .txt and .md files: SQLite FTS5 with BM25 ranking.

The index is its own SQLite file (by default ``DIR/.agentlog-docs.db``), never the event
log. It is brought up to date incrementally before every search: a file whose size and
mtime are unchanged is skipped, a changed one is re-read and re-indexed only if its
sha256 changed, a deleted one is removed. Files are indexed in passages (paragraphs,
split at headings and at ``PASSAGE_LINES`` lines) so that a hit names a file and a line.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import threading
from pathlib import Path
from typing import Any

import msgspec

from . import Tool, ToolError

INDEX_NAME = ".agentlog-docs.db"
SUFFIXES = (".md", ".txt")
PASSAGE_LINES = 12
MAX_LIMIT = 20
TOOL_NAME = "search_documents"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, mtime_ns INTEGER NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL
);
CREATE VIRTUAL TABLE IF NOT EXISTS passages USING fts5(
    text, path UNINDEXED, line UNINDEXED, tokenize = 'porter unicode61'
);
"""
_WORD = re.compile(r"\w+", re.UNICODE)
# Words that match nearly every passage and only blur a free-text query's ranking.
_STOPWORDS = frozenset(
    "a an and are as at be by do does for from how in is it of on or that the this to was what when "
    "where which who why with".split()
)


class Hit(msgspec.Struct, frozen=True):
    """One matching passage: where it is, how well it matches (higher is better), an excerpt."""

    path: str
    line: int
    score: float
    snippet: str


class RefreshStats(msgspec.Struct, frozen=True):
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0


def passages(text: str) -> list[tuple[int, str]]:
    """``(first line number, passage text)`` for each paragraph of ``text``."""
    out: list[tuple[int, str]] = []
    start, lines = 0, []
    for number, line in enumerate(text.splitlines(), start=1):
        heading = line.lstrip().startswith("#")
        only_headings = all(x.lstrip().startswith("#") for x in lines)
        # A heading starts a passage and stays with the paragraph under it.
        if (not line.strip() and not only_headings) or (heading and lines) or len(lines) >= PASSAGE_LINES:
            if lines:
                out.append((start, "\n".join(lines)))
            lines = []
        if line.strip():
            if not lines:
                start = number
            lines.append(line)
        elif lines:
            lines.append("")  # kept so that line offsets within the passage stay true
    if lines:
        out.append((start, "\n".join(lines)))
    return out


def match_query(query: str) -> str | None:
    """An FTS5 query for free text: every word quoted (no operators), any word may match."""
    words = list(dict.fromkeys(w.lower() for w in _WORD.findall(query)))
    words = [w for w in words if w not in _STOPWORDS] or words
    if not words:
        return None
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in words)


class DocIndex:
    """The search index of one folder. Thread-safe; each operation opens its own connection."""

    def __init__(self, folder: str | os.PathLike[str], db_path: str | os.PathLike[str] | None = None):
        self.folder = Path(folder).expanduser().resolve()
        if not self.folder.is_dir():
            raise ToolError(f"--docs {folder}: not a folder")
        self.db_path = Path(db_path) if db_path is not None else self.folder / INDEX_NAME
        self._lock = threading.Lock()
        with self._connect() as db:
            try:
                db.executescript(_SCHEMA)
            except sqlite3.OperationalError as exc:
                raise ToolError(f"this Python's SQLite has no FTS5, needed for --docs: {exc}") from None

    def _connect(self) -> "_Closing":
        db = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        return _Closing(db)

    def _files(self) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for root, dirs, names in os.walk(self.folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in names:
                if name.endswith(SUFFIXES) and not name.startswith("."):
                    path = Path(root) / name
                    found[path.relative_to(self.folder).as_posix()] = path
        return found

    def refresh(self) -> RefreshStats:
        """Bring the index up to date with the folder; only changed files are re-read."""
        with self._lock, self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                stats = self._refresh(db)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return stats

    def _refresh(self, db: sqlite3.Connection) -> RefreshStats:
        known = {row[0]: row[1:] for row in db.execute("SELECT path, mtime_ns, size, sha256 FROM files")}
        on_disk = self._files()
        added = updated = unchanged = 0
        for rel, path in sorted(on_disk.items()):
            try:
                st = path.stat()
                previous = known.get(rel)
                if previous is not None and (previous[0], previous[1]) == (st.st_mtime_ns, st.st_size):
                    unchanged += 1
                    continue
                data = path.read_bytes()
            except OSError:
                continue  # vanished or unreadable since the walk: treated as absent below
            digest = hashlib.sha256(data).hexdigest()
            db.execute("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?)", (rel, st.st_mtime_ns, st.st_size, digest))
            if previous is not None and previous[2] == digest:
                unchanged += 1  # touched, not changed
                continue
            db.execute("DELETE FROM passages WHERE path = ?", (rel,))
            db.executemany("INSERT INTO passages (text, path, line) VALUES (?, ?, ?)",
                           [(text, rel, line) for line, text in passages(data.decode("utf-8", "replace"))])
            if previous is None:
                added += 1
            else:
                updated += 1
        gone = [rel for rel in known if rel not in on_disk]
        for rel in gone:
            db.execute("DELETE FROM passages WHERE path = ?", (rel,))
            db.execute("DELETE FROM files WHERE path = ?", (rel,))
        return RefreshStats(added=added, updated=updated, removed=len(gone), unchanged=unchanged)

    def search(self, query: str, limit: int = 5, *, refresh: bool = True) -> list[Hit]:
        """The passages that best match ``query``, best first (BM25)."""
        if refresh:
            self.refresh()
        expression = match_query(query)
        if expression is None:
            return []
        limit = max(1, min(int(limit), MAX_LIMIT))
        with self._connect() as db:
            rows = db.execute(
                "SELECT path, line, text, bm25(passages), snippet(passages, 0, '[', ']', ' … ', 16) "
                "FROM passages WHERE passages MATCH ? ORDER BY bm25(passages), path, line LIMIT ?",
                (expression, limit),
            ).fetchall()
        words = {w.lower() for w in _WORD.findall(query)} - _STOPWORDS
        return [Hit(path=path, line=_hit_line(int(line), text, words), score=-rank,
                    snippet=" ".join(snippet.split()))
                for path, line, text, rank, snippet in rows]

    def tool(self, name: str = TOOL_NAME) -> Tool:
        """This index as a tool the model may call."""

        def search_documents(query: str, limit: int = 5) -> str:
            hits = self.search(query, limit)
            return json.dumps({"query": query, "results": [msgspec.to_builtins(h) for h in hits]},
                              ensure_ascii=False)

        return Tool(
            name=name,
            description=("Search the local documents for passages relevant to a query (BM25 full-text "
                         "search). Returns JSON: results with the file path, line number, score and a "
                         "snippet. Cite the files you use as sources."),
            parameters={
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": "words to search for"},
                    "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT,
                              "description": "how many passages to return (default 5)"},
                },
                "required": ["query"],
            },
            fn=search_documents,
        )


def _hit_line(start: int, text: str, words: set[str]) -> int:
    """The line of the passage where a query word first appears (else the passage's first)."""
    for offset, line in enumerate(text.splitlines()):
        tokens = {w.lower() for w in _WORD.findall(line)}
        if any(t == w or (min(len(t), len(w)) >= 4 and (t.startswith(w) or w.startswith(t)))
               for t in tokens for w in words):
            return start + offset
    return start


class _Closing:
    """A connection as a context manager that closes it (sqlite3's own only ends a transaction)."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        return self.db

    def __exit__(self, *exc: Any) -> None:
        self.db.close()


def search_tool(folder: str | os.PathLike[str], db_path: str | os.PathLike[str] | None = None) -> Tool:
    """The ``search_documents`` tool over ``folder``, indexed now (so mistakes show up early)."""
    index = DocIndex(folder, db_path)
    index.refresh()
    return index.tool()


__all__ = ["INDEX_NAME", "TOOL_NAME", "DocIndex", "Hit", "RefreshStats", "match_query", "passages", "search_tool"]
