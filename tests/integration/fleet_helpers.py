"""Helpers for the fleet tests: polling with a deadline, free ports, counting stored rows."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from stampede.db import make_engine
from stampede.schema import Request


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str, every_s: float = 0.1) -> None:
    """Poll ``predicate`` until true; fail the test saying ``what`` did not happen in time."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(every_s)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stored_requests(url: str) -> int:
    """Rows in ``requests`` at ``url``, or -1 while the database is unreachable."""
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            return session.scalar(select(func.count()).select_from(Request)) or 0
    except Exception:  # a restarting server: the caller polls again
        return -1
    finally:
        engine.dispose()
