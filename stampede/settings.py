"""Process-wide settings from the environment (prefix ``STAMPEDE_``), and the masking of their secrets.

Defaults are the embedded ones: a SQLite file in the working directory and no Redis, so a laptop
with no services runs everything. Secrets are ``SecretStr`` so they never print by accident; where
they may still occur in text a process sends or logs (a URL, a run's options, a server's error
message), :func:`redact_url` and :func:`redact` mask them.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any
from urllib.parse import quote

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url


class Settings(BaseSettings):
    """Everything a Stampede process reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="STAMPEDE_", env_nested_delimiter="__", extra="ignore")

    database_url: SecretStr = Field(
        default=SecretStr("sqlite:///stampede.db"),
        description="SQLAlchemy URL of the results store; may hold a password, hence secret.",
    )
    redis_url: SecretStr | None = Field(
        default=None,
        description="Redis URL; when set, Locust processes send records to RQ workers instead of storing them.",
    )
    api_key: SecretStr | None = Field(
        default=None, description="Bearer token sent to the target runtime (OpenAI API); never stored."
    )
    queue_name: str = Field(default="stampede", description="RQ queue that receives record batches.")
    batch_size: int = Field(default=5000, ge=1, description="Records per stored batch.")
    flush_interval_s: float = Field(default=1.0, gt=0, description="Longest a record waits in a sink buffer.")
    exit_wait_s: float = Field(
        default=10.0,
        ge=0,
        description="At the end of a run, how long a Locust process waits for its store once deliveries stop "
        "succeeding, before it keeps what it holds in a file for `stampede replay`.",
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process, read once."""
    return Settings()


# Query parameters that carry a secret in database and Redis URLs (libpq's password and sslpassword;
# any *password, *secret, *token or *key).
_SECRET_PARAMETER = re.compile(r"(password|secret|token|key)$", re.IGNORECASE)


def redact_url(url: str) -> str:
    """A database or Redis URL with its password masked, in the user part and in the query, fit for
    logs and reports."""
    parsed = make_url(url)
    hidden = {name: "redacted" for name in parsed.query if _SECRET_PARAMETER.search(name)}
    return parsed.update_query_dict(hidden).render_as_string(hide_password=True)


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
