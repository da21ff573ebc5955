"""The documents search: FTS5 with BM25 order, snippets, file and line, incremental index."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from agentlog.actors import agent_configs, run
from agentlog.cli import main
from agentlog.events import FindingsReady, ToolReturned
from agentlog.store import SQLiteStore
from agentlog.tools import ToolError, ToolRegistry
from agentlog.tools.docsearch import INDEX_NAME, DocIndex, match_query, passages, search_tool

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture
def docs(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "wal.md").write_text(
        "# Write-ahead logging\n"
        "\n"
        "In WAL mode readers do not block writers.\n"
        "A checkpoint moves WAL pages into the database file.\n"
        "Checkpoints run automatically; a checkpoint can also be forced.\n"
    )
    (folder / "notes.txt").write_text(
        "Shopping list.\n\nMilk, eggs, flour, butter, apples, coffee and tea for the week.\n"
        "A checkpoint is mentioned once here, among many other words about groceries.\n"
    )
    (folder / "sub").mkdir()
    (folder / "sub" / "vacuum.md").write_text("VACUUM rebuilds the database file.\n")
    (folder / "other.md").write_text("\n\n".join(f"Unrelated paragraph {i} about pages." for i in range(8)))
    (folder / "ignored.rst").write_text("checkpoint checkpoint checkpoint\n")
    return folder


def test_hits_are_ranked_by_bm25_with_file_line_and_snippet(docs):
    index = DocIndex(docs)
    hits = index.search("checkpoint")
    assert [h.path for h in hits] == ["wal.md", "notes.txt"]  # more occurrences ranks higher; .rst is not indexed
    assert hits[0].score > hits[1].score
    assert hits[0].line == 4  # the passage starts at 1; the word first appears on line 4
    assert hits[1].line == 4
    assert "[checkpoint]" in hits[0].snippet.lower()
    (vacuum,) = index.search("vacuum")
    assert (vacuum.path, vacuum.line) == ("sub/vacuum.md", 1)


def test_the_index_is_its_own_sqlite_file(docs):
    DocIndex(docs).refresh()
    db = sqlite3.connect(docs / INDEX_NAME)
    assert db.execute("SELECT count(*) FROM files").fetchone()[0] == 4  # .md and .txt only
    db.close()


def test_refresh_is_incremental_and_removes_deleted_files(docs):
    index = DocIndex(docs)
    assert (index.refresh().added, index.refresh().unchanged) == (4, 4)
    os.utime(docs / "notes.txt", ns=(1, 1))  # touched, content unchanged: not re-indexed
    stats = index.refresh()
    assert (stats.updated, stats.unchanged) == (0, 4)
    (docs / "notes.txt").write_text("Now about vacuum only.\n")
    stats = index.refresh()
    assert (stats.added, stats.updated, stats.removed) == (0, 1, 0)
    assert [h.path for h in index.search("checkpoint", refresh=False)] == ["wal.md"]
    (docs / "wal.md").unlink()
    (docs / "new.md").write_text("A new checkpoint note.\n")
    stats = index.refresh()
    assert (stats.added, stats.removed) == (1, 1)
    assert [h.path for h in index.search("checkpoint", refresh=False)] == ["new.md"]


def test_search_refreshes_by_default(docs):
    index = DocIndex(docs)
    assert index.search("zebra") == []
    (docs / "zoo.md").write_text("The zebra is striped.\n")
    assert [h.path for h in index.search("zebra")] == ["zoo.md"]


def test_free_text_never_breaks_the_query(docs):
    index = DocIndex(docs)
    for text in ['NEAR("x" OR', "*", "a AND (b", "what is the \"checkpoint\"?", "   ", "列表"]:
        index.search(text)  # no sqlite3.OperationalError
    assert match_query("How does a WAL checkpoint work?") == '"wal" OR "checkpoint" OR "work"'
    assert match_query("...") is None


def test_passages_keep_headings_with_their_paragraph():
    assert passages("# Title\n\nBody one.\nBody two.\n\n## Next\nMore.\n") == [
        (1, "# Title\n\nBody one.\nBody two."), (6, "## Next\nMore.")]


def test_the_tool_returns_json_and_respects_the_limit(docs):
    tool = search_tool(docs)
    result, is_error = tool.run(json.dumps({"query": "checkpoint database", "limit": 1}))
    assert not is_error
    data = json.loads(result)
    assert len(data["results"]) == 1
    assert set(data["results"][0]) == {"path", "line", "score", "snippet"}
    assert tool.spec.parameters["required"] == ["query"]


def test_a_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ToolError, match="not a folder"):
        DocIndex(tmp_path / "nope")


def test_offline_researcher_cites_the_files_it_found(docs, tmp_path):
    with SQLiteStore(tmp_path / "log.db", create=True) as store:
        summary = run(store, "WAL checkpoint", agents=agent_configs("offline"), max_iterations=1,
                      tools={"researcher": ["search_documents"]}, registry=ToolRegistry([search_tool(docs)]))
        events = store.events(summary.run_id)
    assert summary.status == "finished"
    (returned,) = [e for e in events if isinstance(e, ToolReturned)]
    assert json.loads(returned.result)["results"][0]["path"] == "wal.md"
    (ready,) = [e for e in events if isinstance(e, FindingsReady)]
    assert ready.findings.sources[0] == "wal.md:3"  # the first line naming WAL
    assert any("notes.txt" in s for s in ready.findings.sources)
    assert not (tmp_path / "log.db-docs").exists()


def test_cli_docs_flag_and_example_config(tmp_path, capsys):
    db = str(tmp_path / "log.db")
    docs_copy = tmp_path / "docs"
    docs_copy.mkdir()
    for path in (EXAMPLES / "docs").glob("*.md"):
        (docs_copy / path.name).write_text(path.read_text())
    assert main(["run", "write-ahead logging", "--db", db, "--model", "offline", "--docs", str(docs_copy),
                 "--max-iterations", "1", "-q"]) == 0
    assert main(["run", "write-ahead logging", "--db", db, "--config", str(EXAMPLES / "parallel-docs.toml"),
                 "--docs", str(docs_copy), "-q"]) == 0
    capsys.readouterr()
    with SQLiteStore(db) as store:
        runs = store.list_runs()
        assert len(runs) == 2 and all(r.status == "finished" for r in runs)
        for r in runs:
            sources = [e for e in store.events(r.run_id) if isinstance(e, FindingsReady)][0].findings.sources
            assert any(".md:" in s for s in sources)
    assert main(["run", "x", "--db", db, "--docs", str(tmp_path / "missing"), "--model", "offline", "-q"]) == 2
    assert "not a folder" in capsys.readouterr().err
