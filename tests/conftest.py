"""Shared fixtures: real SQLite files, a real chat-completions server on 127.0.0.1."""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pykka
import pytest

from agentlog.actors.sharing import AGENTS
from agentlog.models import Endpoint, Gateway, RetryPolicy
from agentlog.events import to_builtins
from agentlog.store import SchemaError, SQLiteStore
from tests.fake_openai import FakeOpenAIServer

# A key that must never reach the log, a fixture or an error message on disk.
SECRET = "sk-test-0123456789-must-never-be-logged"
REPO = Path(__file__).resolve().parent.parent

SEED = int(os.environ.get("AGENTLOG_TEST_SEED", random.SystemRandom().randrange(1 << 30)))


def pytest_report_header(config: pytest.Config) -> str:
    return f"random seed: {SEED} (set AGENTLOG_TEST_SEED={SEED} to repeat)"


@pytest.fixture
def rng() -> random.Random:
    return random.Random(SEED)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "log.db"


@pytest.fixture
def store(db_path: Path):
    s = SQLiteStore(db_path)
    yield s
    s.close()


@pytest.fixture(scope="session")
def postgres_cluster():
    """A throwaway PostgreSQL cluster for the session (tests/postgres.py); skipped with the
    reason when the server binaries are missing, unless AGENTLOG_REQUIRE_POSTGRES=1."""
    from tests.postgres import running_cluster

    yield from running_cluster()


@pytest.fixture
def pg_url(postgres_cluster) -> str:
    """The URL (with the test role's password) of a new, empty database, dropped afterwards."""
    name = postgres_cluster.database()
    yield postgres_cluster.url(name)
    postgres_cluster.drop(name)


@pytest.fixture
def server():
    with FakeOpenAIServer() as s:
        yield s


@pytest.fixture
def gateway(server: FakeOpenAIServer):
    g = Gateway(Endpoint(base_url=server.base_url, api_key=SECRET),
                retry=RetryPolicy(max_attempts=4, initial_wait=0.01, max_wait=0.05), timeout=5.0)
    yield g
    g.close()


@pytest.fixture(autouse=True)
def _no_stray_actors():
    yield
    AGENTS.close_idle()  # agents no run holds stay a while for the next run (actors/sharing.py); as at exit
    leftover = pykka.ActorRegistry.get_all()
    pykka.ActorRegistry.stop_all()
    assert not leftover, f"actors left running: {leftover}"


def cli_env(**extra: str) -> dict[str, str]:
    """Environment for a CLI subprocess: no real keys or endpoints from the developer's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AGENTLOG_"))}
    env["AGENTLOG_CONFIG"] = os.devnull
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


PYTHON = sys.executable


def logged_events(db: str | Path) -> list[tuple[str, int, str, dict]]:
    """Every event in the log at ``db`` as ``(run_id, seq, type, data)``, ordered by run and seq,
    ``data`` as the event's plain JSON data; ``[]`` while the log does not exist yet.

    Rows are MessagePack referring to blobs, so tests read them through the store.
    """
    if not Path(db).exists():
        return []
    try:
        with SQLiteStore(db, create=False) as store:
            runs = sorted(r.run_id for r in store.list_runs())
            return [(s.run_id, s.seq, s.type, to_builtins(s.event)) for run_id in runs for s in store.read(run_id)]
    except SchemaError:  # created but not migrated yet
        return []
