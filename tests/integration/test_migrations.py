"""Migrations build the schema the models describe, on SQLite and on PostgreSQL."""

import uuid
from collections.abc import Iterator

import pytest
from alembic import command
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from stampede.db import alembic_config, upgrade

PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def check(url: str) -> None:
    command.check(alembic_config(url))  # raises when the models and the migrated schema differ


@pytest.fixture
def postgres_url() -> Iterator[str]:
    name = f"stampede_mig_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        pytest.fail(f"PostgreSQL is needed on 127.0.0.1:5432 (apt-get install postgresql): {exc}")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_sqlite_upgrade_head_matches_the_models(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/m.db"
    upgrade(url)
    check(url)


def test_postgresql_upgrade_head_matches_the_models(postgres_url: str) -> None:
    upgrade(postgres_url)
    check(postgres_url)
