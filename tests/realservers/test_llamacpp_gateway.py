"""A runtime called directly and through a real OpenAI-compatible gateway (LiteLLM's proxy from PyPI,
in its own cached venv) in one sweep file: ``stampede report`` and the dashboard's Compare data show
both targets side by side, each with every request stored and none failed, so the gateway's added
TTFT and E2E can be read off.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from dashboard import queries
from stampede.schema import Request
from tests.realservers import llamacpp
from tests.realservers.runs import run_stampede
from tests.realservers.servers import MODEL_NAME, Server, serve_litellm

pytest_plugins = ["tests.realservers.llamacpp_fixtures"]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

STEPS = [1, 4]
TARGETS = ("direct", "litellm")


@pytest.fixture(scope="module")
def master_key() -> str:
    return f"sk-{secrets.token_hex(16)}"


@pytest.fixture(scope="module")
def gateway(llama_server: Server, master_key: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    try:
        llamacpp.litellm_proxy()
    except RuntimeError as exc:
        pytest.fail(f"installing {llamacpp.LITELLM_REQUIREMENT} from PyPI failed: {exc}")
    with serve_litellm(llama_server, tmp_path_factory.mktemp("litellm") / "litellm.log", master_key) as server:
        yield server


def test_a_sweep_file_compares_the_runtime_direct_and_through_the_gateway(
    llama_server: Server, gateway: Server, master_key: str, tmp_path: Path
) -> None:
    sweep_file = tmp_path / "sweep.json"
    targets = [
        {"name": "direct", "url": llama_server.url, "model": MODEL_NAME, "runtime": "llamacpp"},
        {"name": "litellm", "url": gateway.url, "model": MODEL_NAME},
    ]
    spec = {"name": "direct vs litellm", "steps": STEPS, "step_duration_s": 5, "warmup_s": 1, "max_tokens": 24,
            "targets": targets}  # fmt: skip
    sweep_file.write_text(json.dumps(spec))
    db_url = f"sqlite:///{tmp_path}/results.db"
    run_id = uuid.uuid4()
    # The gateway's key goes to both targets; llama-server, started without --api-key, ignores it.
    env = {"STAMPEDE_API_KEY": master_key}
    sweep = run_stampede(["sweep", "--file", str(sweep_file), "--run-id", str(run_id)], db_url, tmp_path, env)
    assert "not stored yet" not in sweep.stderr, sweep.stderr
    report = run_stampede(["report", str(run_id)], db_url, tmp_path, env).stdout

    with Session(create_engine(db_url)) as session:
        rows = dict(session.execute(select(Request.target, func.count()).group_by(Request.target)).all())
        failed = dict(
            session.execute(
                select(Request.target, func.count()).where(Request.outcome != "ok").group_by(Request.target)
            ).all()
        )
    assert set(rows) == set(TARGETS) and min(rows.values()) > 10, rows
    assert failed == {}, failed
    assert all(name in report for name in TARGETS), report
    assert master_key not in report

    compare = [s.as_row() for s in queries.step_summaries(db_url, str(run_id))]
    by_target = {(row["target"], row["users"]): row for row in compare}
    assert set(by_target) == {(t, users) for t in TARGETS for users in STEPS}, sorted(by_target)
    for (target, users), row in by_target.items():
        assert row["errors"] == 0 and row["requests"] > 0, (target, users, row)
        assert row["ttft_p50_ms"] is not None and row["e2e_p50_ms"] is not None, row
