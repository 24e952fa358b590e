#!/usr/bin/env bash
# The whole test suite: lint, format, types, unit and integration tests (pytest arguments pass through).
# Integration tests use PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379 when present.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test]"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy stampede loadgen workers dashboard simulator
.venv/bin/pytest "$@"
