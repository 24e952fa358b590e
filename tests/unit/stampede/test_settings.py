"""URLs fit for logs: no password, in the user part or in the query."""

import pytest

from stampede.settings import redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+psycopg://u:pw1@h:5432/db", "postgresql+psycopg://u:***@h:5432/db"),
        (
            "postgresql+psycopg://u@h/db?sslmode=require&password=pw2&sslpassword=pw3",
            "postgresql+psycopg://u@h/db?password=redacted&sslmode=require&sslpassword=redacted",
        ),
        ("redis://:pw4@127.0.0.1:6379/0?auth_token=pw5", "redis://:***@127.0.0.1:6379/0?auth_token=redacted"),
        ("sqlite:////tmp/results.db", "sqlite:////tmp/results.db"),
    ],
)
def test_passwords_are_masked_wherever_the_url_carries_them(url: str, shown: str) -> None:
    assert redact_url(url) == shown
