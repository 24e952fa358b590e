"""The closed-loop backoff after refused requests, and Retry-After."""

from datetime import UTC, datetime

import pytest

from loadgen.backoff import FIRST_S, MAX_S, RETRY_AFTER_MAX_S, Backoff, parse_retry_after
from stampede.records import Outcome


def test_waits_double_with_each_refusal_in_a_row_up_to_the_cap_and_a_success_ends_them() -> None:
    backoff = Backoff()
    waits = []
    for _ in range(10):
        backoff.record(Outcome.HTTP_ERROR)
        waits.append(backoff.wait_s)
    assert waits[:4] == [FIRST_S, 2 * FIRST_S, 4 * FIRST_S, 8 * FIRST_S]
    assert waits[-1] == MAX_S
    backoff.record(Outcome.OK)
    assert backoff.wait_s == 0 and backoff.refusals == 0
    backoff.record(Outcome.CONNECTION_ERROR)
    assert backoff.wait_s == FIRST_S


@pytest.mark.parametrize("outcome", [Outcome.TIMEOUT, Outcome.TRUNCATED, Outcome.INVALID_STREAM])
def test_a_stream_that_failed_after_taking_the_servers_time_ends_the_backoff(outcome: Outcome) -> None:
    backoff = Backoff()
    backoff.record(Outcome.HTTP_ERROR)
    backoff.record(outcome)
    assert backoff.wait_s == 0 and backoff.refusals == 0


def test_retry_after_lengthens_the_wait_within_a_cap_but_never_shortens_it() -> None:
    backoff = Backoff()
    backoff.record(Outcome.HTTP_ERROR, retry_after_s=2.0)
    assert backoff.wait_s == 2.0
    backoff.record(Outcome.HTTP_ERROR, retry_after_s=3600.0)
    assert backoff.wait_s == RETRY_AFTER_MAX_S
    backoff.record(Outcome.HTTP_ERROR, retry_after_s=0.0)  # "now" is no licence to hammer
    assert backoff.wait_s == 4 * FIRST_S


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        (" 1.5 ", 1.5),
        ("-3", 0.0),
        ("Sat, 21 Nov 2026 12:00:30 GMT", 30.0),
        ("Sat, 21 Nov 2026 11:59:00 GMT", 0.0),  # already past
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_takes_seconds_or_an_http_date(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, now=datetime(2026, 11, 21, 12, 0, tzinfo=UTC)) == seconds
