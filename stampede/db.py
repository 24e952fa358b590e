"""Engines and migrations for the results store (SQLite embedded, PostgreSQL in a fleet).

Every process that reads or writes results gets its engine from :func:`get_engine`, which makes the
schema ready on the engine's first connection (:func:`prepare_schema`): a SQLite file is the user's
own, so it is created or upgraded to the newest revision there and then, under a lock file beside
it so that processes starting together migrate it once; a PostgreSQL database is shared, and its
upgrade is the operator's decision, so one that is missing tables or behind is refused with the
command that fixes it (``stampede db upgrade``), before anything is sent or stored.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from stampede.settings import get_settings, redact_url

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
    if isinstance(exc, SchemaError):
        return str(exc)  # already one line that names the store and the fix
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


class SchemaError(RuntimeError):
    """The results store's schema is missing or not the one this version writes; the message says
    what to run."""


@lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    """The process's shared engine for ``url``; its first connection makes the schema ready (see the
    module's docstring) or raises :class:`SchemaError`, and so does the next one until it is ready."""
    engine = make_engine(url)
    event.listen(engine, "first_connect", lambda *_: prepare_schema(url))
    return engine


def settings_session() -> Session:
    """A session on the database the settings name (``STAMPEDE_DATABASE_URL``)."""
    return Session(get_engine(get_settings().database_url.get_secret_value()))


def alembic_config(url: str) -> Any:
    """Alembic's configuration for ``url``, whatever the working directory."""
    # Imported here: processes that only store records never need Alembic (nor its import-time logs).
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["database_url"] = url
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the schema at ``url`` up to ``revision`` with the migrations in ``migrations/``; on SQLite
    under the file's schema lock, so processes that start together migrate it once."""
    from alembic import command

    with _schema_lock(url), _quiet("alembic.runtime.plugins"):
        command.upgrade(alembic_config(url), revision)


def prepare_schema(url: str) -> None:
    """Make the schema at ``url`` ready to store: a SQLite file is created or upgraded to the newest
    revision; any other database must already be there, else :class:`SchemaError` names the fix."""
    current, head = _revisions(url)
    if current == head:
        return
    shown = redact_url(url)
    if current is not None and not _known(url, current):
        raise SchemaError(
            f"the results store {shown} is at schema revision {current}, which this version of Stampede does "
            f"not know (written by a newer one?); this version writes revision {head}"
        )
    if make_url(url).get_backend_name() == "sqlite":
        upgrade(url)
        return
    state = "has no tables yet" if current is None else f"is at schema revision {current}, behind {head}"
    raise SchemaError(f"the results store {shown} {state}: run `stampede db upgrade` with this STAMPEDE_DATABASE_URL")


def _revisions(url: str) -> tuple[str | None, str | None]:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    # Its own short-lived connection: this runs while the caller's pool makes its first one.
    engine = make_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection, _quiet("alembic.runtime.migration", "alembic.runtime.plugins"):
            return _current(connection), head
    finally:
        engine.dispose()


@contextlib.contextmanager
def _quiet(*loggers: str) -> Iterator[None]:
    """Alembic's INFO lines while it only reads the revision (its set-up, not a migration) left out."""
    saved = [(logging.getLogger(name), logging.getLogger(name).level) for name in loggers]
    for logger, _ in saved:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in saved:
            logger.setLevel(level)


def _current(connection: Connection) -> str | None:
    from alembic.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def _known(url: str, revision: str) -> bool:
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    try:
        ScriptDirectory.from_config(alembic_config(url)).get_revision(revision)
    except CommandError:
        return False
    return True


@contextlib.contextmanager
def _schema_lock(url: str) -> Iterator[None]:
    """Held while a SQLite file is migrated: a lock file beside it (``stampede.db-schema.lock``). Other
    databases are upgraded by their operator, once (``stampede db upgrade``)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        yield
        return
    path = Path(parsed.database)
    with path.with_name(f"{path.name}-schema.lock").open("ab") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield
