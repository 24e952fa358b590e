"""Process-wide settings from the environment (prefix ``STAMPEDE_``).

Defaults are the embedded ones: a SQLite file in the working directory and no Redis, so a laptop
with no services runs everything. Secrets are ``SecretStr`` so they never print by accident.
"""

from __future__ import annotations

import re
from functools import lru_cache

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
