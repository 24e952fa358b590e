"""Engines and migrations for the results store (SQLite embedded, PostgreSQL in a fleet)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DBAPIError

from stampede.settings import redact_url

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the dashboard read while a sweep writes; the busy timeout lets several Locust
    # processes share one file instead of failing on a momentary lock.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def store_problem(exc: Exception, url: str) -> str:
    """One line for a failure of the results store at ``url``: the URL redacted, the driver's first
    line (which names the host, port, user and database, never the password), and the fix if known."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = str(cause).strip().splitlines() or [type(cause).__name__]
    first_line, shown = lines[0], redact_url(url)
    if "no such table" in first_line or ("relation" in first_line and "does not exist" in first_line):
        return f"the results store {shown} has no tables yet: run `stampede db upgrade` or a sweep ({first_line})"
    return f"the results store {shown} failed: {first_line}"


def make_engine(url: str, **kwargs: Any) -> Engine:
    """A new engine for ``url``, with the pragmas SQLite needs for concurrent use."""
    engine = create_engine(url, pool_pre_ping=not url.startswith("sqlite"), **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


@lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    """The process's shared engine for ``url``."""
    return make_engine(url)


def alembic_config(url: str) -> Any:
    """Alembic's configuration for ``url``, whatever the working directory."""
    # Imported here: processes that only store records never need Alembic (nor its import-time logs).
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["database_url"] = url
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the schema at ``url`` up to ``revision`` with the migrations in ``migrations/``."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)
