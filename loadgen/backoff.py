"""How long a closed-loop user waits after a refused request before it sends the next.

A closed-loop user sends its next request as soon as the last one ended. Against a target that
refuses at once (down, rate limiting with 429, a wrong model name answered with 404) that is a
request every millisecond or so per user: thousands of error records a second, and a server that is
shedding load gets more of it. So after a refusal (no connection, or an HTTP error status) the user
waits: :data:`FIRST_S` doubling with each refusal in a row up to :data:`MAX_S`, or longer if the
server's ``Retry-After`` asks it (up to :data:`RETRY_AFTER_MAX_S`). Any other outcome ends the
backoff: a stream that timed out, broke off or was malformed took the server's time like a
success, and backing off there would only thin out an overloaded step. The wait lies between
requests, so no request's latency includes it, and it ends at once when the run stops. Open-loop
users keep their schedule instead: their rate bounds the requests already.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from stampede.records import Outcome

FIRST_S = 0.05
MAX_S = 5.0
RETRY_AFTER_MAX_S = 10.0
REFUSALS = frozenset({Outcome.CONNECTION_ERROR, Outcome.HTTP_ERROR})


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (a number of seconds or an HTTP date); None if unusable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class Backoff:
    """One user's refusals in a row, and the wait they call for."""

    def __init__(self) -> None:
        self.refusals = 0
        self.wait_s = 0.0

    def record(self, outcome: Outcome, retry_after_s: float | None = None) -> None:
        """Note how a request ended; ``wait_s`` is then the wait before the next."""
        if outcome not in REFUSALS:
            self.refusals, self.wait_s = 0, 0.0
            return
        self.refusals += 1
        wait_s = min(FIRST_S * 2 ** (self.refusals - 1), MAX_S)
        if retry_after_s is not None:  # at least what the server asks; Retry-After: 0 is not a licence to hammer
            wait_s = max(wait_s, min(retry_after_s, RETRY_AFTER_MAX_S))
        self.wait_s = wait_s
