"""Secrets masked in what a Locust process sends to the store: the API key and the database and
Redis passwords, wherever they occur in a run's options or a request's error message."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from sqlalchemy.engine import make_url

from stampede.settings import get_settings

REDACTED = "**********"
MIN_SECRET_CHARS = 4


def known_secrets() -> list[str]:
    """This process's secrets (API key, database and Redis passwords), to scrub from what it sends."""
    settings = get_settings()
    urls = [settings.database_url.get_secret_value()]
    if settings.redis_url is not None:
        urls.append(settings.redis_url.get_secret_value())
    found = [settings.api_key.get_secret_value()] if settings.api_key is not None else []
    for url in urls:
        password = make_url(url).password
        if password:
            # As written in the URL (percent-encoded) and as the server sees it.
            found += [str(password), quote(str(password), safe="")]
    # Masking a secret of a few characters would garble every string it occurs in.
    return sorted({s for s in found if len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True)


def redact(value: Any, secrets: list[str]) -> Any:
    """``value`` (a string, or dicts and lists of them) with every secret replaced by REDACTED."""
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, dict):
        return {k: redact(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, secrets) for v in value]
    return value
