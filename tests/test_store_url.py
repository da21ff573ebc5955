"""Which log a ``--db`` names (``open_store``), and how it is shown (``redact``): a path or
``sqlite:///`` is a file, ``postgresql://`` a database, any other scheme is refused."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from agentlog.store import PostgresStore, SQLiteStore, StoreURLError, open_store, redact
from tests.conftest import PYTHON, cli_env
from tests.test_store_contract import started


def test_a_path_and_an_sqlite_url_open_the_same_file(tmp_path: Path):
    path = tmp_path / "logs" / "log.db"
    with open_store(str(path)) as store:
        assert isinstance(store, SQLiteStore)
        store.append("run", [started("t")], 0)
    for target in (path, f"sqlite://{path}", f"SQLITE://{path}"):
        with open_store(target, create=False) as store:
            assert store.last_seq("run") == 1


def test_a_postgres_url_opens_postgres(pg_url: str):
    for url in (pg_url, pg_url.replace("postgresql://", "postgres://", 1)):
        with open_store(url) as store:
            assert isinstance(store, PostgresStore)
            assert store.where == redact(url) and ":***@" in store.where
            assert store.append("run", [started("t")], store.last_seq("run")) >= 1


@pytest.mark.parametrize("target", ["mysql://root:hunter2@db/agentlog", "http://x", "sqlite://relative.db",
                                    "redis://:hunter2@localhost:6379"])
def test_any_other_url_is_refused_and_nothing_is_made(tmp_path: Path, target: str, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StoreURLError) as caught:
        open_store(target)
    assert "hunter2" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://ann:s3cret@db.example:5433/log", "postgresql://ann:***@db.example:5433/log"),
    ("postgresql://ann:p%40ss%3Aw@db/log", "postgresql://ann:***@db/log"),
    ("postgresql://ann:p@ss@db/log", "postgresql://ann:***@db/log"),  # an unescaped '@' is cut whole
    ("postgresql://ann@db/log?password=s3cret&sslmode=require", "postgresql://ann@db/log?password=***&sslmode=require"),
    ("postgresql://ann@db/log?sslmode=verify-full&sslpassword=k3y", "postgresql://ann@db/log?sslmode=verify-full&sslpassword=***"),
    ("postgresql://ann@db/log", "postgresql://ann@db/log"),
    ("postgresql:///log?host=/run/postgresql", "postgresql:///log?host=/run/postgresql"),
    ("/var/lib/agentlog/log.db", "/var/lib/agentlog/log.db"),
])
def test_redact_hides_the_password_only(url: str, shown: str):
    assert redact(url) == shown


def test_the_cli_refuses_an_unknown_scheme_in_one_line_and_makes_no_directory(tmp_path: Path):
    for db in ("mysql://root:hunter2@db/agentlog", "http://x"):
        done = subprocess.run([PYTHON, "-m", "agentlog.cli", "runs", "--db", db], cwd=tmp_path, env=cli_env(),
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        assert done.stdout == "" and done.stderr.count("\n") == 1
        assert done.stderr.startswith(f"agentlog: {redact(db)}: agentlog keeps its log in SQLite")
        assert "hunter2" not in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_agentlog_db_and_the_config_file_select_the_log_as_db_does(tmp_path: Path, pg_url: str):
    with open_store(pg_url) as store:
        store.append("5e1a0c7d2b3f4a61", [started("Explain WAL")], 0)
    config = tmp_path / "config.toml"
    config.write_text(f'db = "{pg_url}"\n')
    for env in (cli_env(AGENTLOG_DB=pg_url), cli_env(AGENTLOG_CONFIG=str(config))):
        done = subprocess.run([PYTHON, "-m", "agentlog.cli", "runs"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "5e1a0c7d" in done.stdout and "Explain WAL" in done.stdout
    assert [p.name for p in tmp_path.iterdir()] == ["config.toml"]
