"""The schema is made ready by whoever stores first: a new SQLite file is created and upgraded once
even when several processes start on it together; a PostgreSQL database missing tables or behind is
refused, in one line naming `stampede db upgrade`, and left as it was."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from stampede.db import SchemaError, alembic_config, get_engine, prepare_schema, upgrade
from stampede.settings import get_settings
from tests.unit.workers.fake_nvml import FakeNvml
from workers import gpu

pytest_plugins = ["tests.integration.fleet_fixtures"]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

PROCESSES = 6
# Every process imports Stampede first, then all start migrating at this many seconds from now.
START_IN_S = 8.0
HEAD = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def revisions(url: str) -> list[str]:
    with create_engine(url).connect() as connection:
        return [row[0] for row in connection.execute(text("SELECT version_num FROM alembic_version"))]


def test_processes_starting_together_on_a_new_sqlite_file_migrate_it_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/new.db"
    start_at = time.time() + START_IN_S
    script = (
        "import logging, sys, time; from stampede.db import prepare_schema; logging.basicConfig(level='INFO'); "
        f"time.sleep(max(0.0, {start_at} - time.time())); prepare_schema(sys.argv[1])"
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", script, url], stderr=subprocess.PIPE, text=True)
        for _ in range(PROCESSES)
    ]
    results = [(p.wait(timeout=90), p.stderr.read() if p.stderr else "") for p in processes]
    assert time.time() >= start_at
    assert [code for code, _ in results] == [0] * PROCESSES, [err[-1500:] for _, err in results]
    assert revisions(url) == [HEAD]
    assert {"runs", "steps", "requests", "schedules"} <= set(inspect(create_engine(url)).get_table_names())
    # Migrated once: the other processes found it at head under the lock and logged no migration.
    assert sum("Running upgrade  -> 0001" in err for _, err in results) == 1


def test_the_first_query_on_a_new_sqlite_file_finds_the_tables(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/fresh.db"
    with get_engine(url).connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM runs")).scalar() == 0
    assert (tmp_path / "fresh.db-schema.lock").exists()


def test_an_older_sqlite_file_is_upgraded_on_first_use(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/old.db"
    upgrade(url, "0003")
    prepare_schema(url)
    assert revisions(url) == [HEAD]


def test_a_postgresql_database_without_tables_is_refused_and_left_alone(empty_pg: str) -> None:
    with pytest.raises(SchemaError) as refused:
        prepare_schema(empty_pg)
    assert str(refused.value) == (
        f"the results store {empty_pg} has no tables yet: run `stampede db upgrade` with this STAMPEDE_DATABASE_URL"
    )
    assert inspect(create_engine(empty_pg)).get_table_names() == []


def test_a_postgresql_database_behind_is_refused_by_the_first_query(empty_pg: str) -> None:
    upgrade(empty_pg, "0004")
    with pytest.raises(SchemaError, match=rf"is at schema revision 0004, behind {HEAD}: run `stampede db upgrade`"):
        get_engine(empty_pg).connect()
    assert revisions(empty_pg) == ["0004"]
    upgrade(empty_pg)
    with get_engine(empty_pg).connect() as connection:  # ready now: the next connection checks again
        assert connection.execute(text("SELECT count(*) FROM runs")).scalar() == 0
    get_engine(empty_pg).dispose()


def test_the_agent_on_a_postgresql_database_without_tables_says_once_what_to_run(
    empty_pg: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("STAMPEDE_DATABASE_URL", empty_pg)
    get_settings.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="workers.gpu"):
            assert gpu.main(["--count", "3", "--interval-s", "0.01"], nvml=FakeNvml()) == 0
    finally:
        get_settings.cache_clear()
    assert [r.getMessage() for r in caplog.records] == [
        f"storing samples failed (the results store {empty_pg} has no tables yet: run `stampede db upgrade` with "
        "this STAMPEDE_DATABASE_URL); dropping them until the store is back"
    ]
    assert inspect(create_engine(empty_pg)).get_table_names() == []
