"""Start-up checks: before a single request is sent, the stores a process will write to answer and
the results schema is ready, or the process refuses to start in one line that says what to do.

The Locust processes, ``stampede sweep`` and the workers call these. A SQLite file is created or
upgraded here (it is the user's own); a PostgreSQL database missing tables or behind is refused with
the command that upgrades it (see :func:`stampede.db.prepare_schema`).
"""

from __future__ import annotations

from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from stampede.db import SchemaError, prepare_schema, store_problem
from stampede.settings import Settings, redact_url

PROBE_TIMEOUT_S = 3.0


class StoreUnavailable(Exception):
    """A store that cannot take records; the message is one line, meant for the user as is."""


def check_database(url: str) -> None:
    """Raise StoreUnavailable unless the database at ``url`` answers and its schema is ready
    (a SQLite file is created or upgraded first)."""
    try:
        prepare_schema(url)
    except SchemaError as exc:
        raise StoreUnavailable(str(exc)) from None
    except SQLAlchemyError as exc:
        raise StoreUnavailable(store_problem(exc, url)) from None


def check_redis(url: str) -> None:
    """Raise StoreUnavailable unless Redis at ``url`` answers a PING."""
    connection = Redis.from_url(url, socket_connect_timeout=PROBE_TIMEOUT_S, socket_timeout=PROBE_TIMEOUT_S)
    try:
        connection.ping()
    except RedisError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StoreUnavailable(
            f"Redis at {redact_url(url)} is unreachable ({reason}): start it, or correct STAMPEDE_REDIS_URL "
            "(unset, records go straight to STAMPEDE_DATABASE_URL)"
        ) from None
    finally:
        connection.close()


def check_stores(settings: Settings, database: bool) -> None:
    """Check what this process will write to: Redis when it is configured, and the database when
    ``database`` is true (a process that stores, or that reads results back)."""
    if settings.redis_url is not None:
        check_redis(settings.redis_url.get_secret_value())
    if database:
        check_database(settings.database_url.get_secret_value())


def database_named(settings: Settings) -> bool:
    """Whether this process's environment names a database (STAMPEDE_DATABASE_URL), rather than
    falling back to the embedded default: a fleet's load generator then checks it too."""
    return "database_url" in settings.model_fields_set
