"""``stampede sweep`` against llama.cpp's own ``llama-server`` (4 slots, one thread, a tiny model).

What a user sees first against a real runtime: every request the server served is one stored ok
row, the tokens stored are the tokens the server counted, the server's per-request timings fit
inside the client's, its own statistics are sampled, and the sweep shows the slot limit (throughput
flat past 4 users while TTFT climbs).
"""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from stampede.report import step_summaries
from stampede.schema import Request, RuntimeSample
from tests.realservers.runs import run_stampede
from tests.realservers.servers import MODEL_NAME, Server, prometheus_counters

pytest_plugins = ["tests.realservers.llamacpp_fixtures"]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

STEPS = [1, 2, 4, 8, 16]
STEP_S = 6
MAX_TOKENS = 24


@pytest.fixture(scope="module")
def sweep(llama_server: Server, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, uuid.UUID, dict[str, float]]:
    """One sweep for the module's tests: its database, run id and the server counters' change over it."""
    workdir = tmp_path_factory.mktemp("sweep")
    db_url = f"sqlite:///{workdir}/results.db"
    run_id = uuid.uuid4()
    before = prometheus_counters(llama_server.url)
    result = run_stampede(
        ["sweep", "--host", llama_server.url, "--api", "openai_chat", "--model", MODEL_NAME, "--runtime", "llamacpp",
         "--steps", ",".join(map(str, STEPS)), "--step-duration-s", str(STEP_S), "--warmup-s", "1",
         "--max-tokens", str(MAX_TOKENS), "--ignore-eos", "--run-id", str(run_id)],
        db_url, workdir,
    )  # fmt: skip
    after = prometheus_counters(llama_server.url)
    assert "not stored yet" not in result.stderr, result.stderr
    return db_url, run_id, {name: after[name] - before.get(name, 0.0) for name in after}


def test_every_request_is_one_ok_row(sweep: tuple[str, uuid.UUID, dict[str, float]]) -> None:
    db_url, run_id, _ = sweep
    with Session(create_engine(db_url)) as session:
        outcomes = dict(session.execute(select(Request.outcome, func.count()).group_by(Request.outcome)).all())
        errors_by_step = dict(
            session.execute(
                select(Request.step_index, func.count()).where(Request.outcome != "ok").group_by(Request.step_index)
            ).all()
        )
    assert outcomes.get("ok", 0) > 50, outcomes
    assert errors_by_step == {}, f"failed requests by step {errors_by_step}; outcomes {outcomes}"


def test_stored_tokens_equal_the_servers_counters(sweep: tuple[str, uuid.UUID, dict[str, float]]) -> None:
    db_url, _, delta = sweep
    with Session(create_engine(db_url)) as session:
        prompt, output = session.execute(select(func.sum(Request.prompt_tokens), func.sum(Request.output_tokens))).one()
    # llama-server counts a prompt's tokens as processed or as reused from its prompt cache.
    server_prompt = delta["llamacpp:prompt_tokens_total"] + delta.get("llamacpp:prompt_tokens_cached_total", 0.0)
    assert (prompt, output) == (server_prompt, delta["llamacpp:tokens_predicted_total"])


def test_server_timings_fit_inside_the_clients(sweep: tuple[str, uuid.UUID, dict[str, float]]) -> None:
    db_url, _, _ = sweep
    with Session(create_engine(db_url)) as session:
        rows = session.execute(select(Request.server_timings_ms, Request.ttft_ms, Request.e2e_ms)).all()
    assert rows
    for timings, ttft_ms, e2e_ms in rows:
        # The server times its prefill and decode inside the request the client timed around them.
        assert set(timings) >= {"prompt_eval_ms", "eval_ms"}, timings
        assert timings["prompt_eval_ms"] <= ttft_ms, (timings, ttft_ms)
        assert timings["prompt_eval_ms"] + timings["eval_ms"] <= e2e_ms, (timings, e2e_ms)


def test_slots_and_metrics_are_sampled(sweep: tuple[str, uuid.UUID, dict[str, float]]) -> None:
    db_url, run_id, _ = sweep
    with Session(create_engine(db_url)) as session:
        metrics = set(session.scalars(select(RuntimeSample.metric).where(RuntimeSample.run_id == run_id)))
        busy = select(func.sum(RuntimeSample.value)).where(RuntimeSample.metric == "llamacpp_slot:is_processing")
        busy_per_scrape = session.scalars(busy.group_by(RuntimeSample.sampled_at)).all()
        slot_labels = session.scalars(
            select(RuntimeSample.labels).where(RuntimeSample.metric == "llamacpp_slot:is_processing")
        ).all()
    assert {"llamacpp:prompt_tokens_total", "llamacpp:tokens_predicted_total", "llamacpp_slot:n_ctx"} <= metrics
    assert {labels["slot"] for labels in slot_labels} == {"0", "1", "2", "3"}
    assert max(busy_per_scrape) == 4, busy_per_scrape  # at 8 and 16 users every slot is taken, and never more


def test_throughput_flattens_past_the_slots_while_ttft_climbs(sweep: tuple[str, uuid.UUID, dict[str, float]]) -> None:
    db_url, run_id, _ = sweep
    with Session(create_engine(db_url)) as session:
        by_users = {s.summary.users: s.summary for s in step_summaries(session, run_id)}
    assert sorted(by_users) == STEPS
    throughput = {users: s.output_tokens_per_s for users, s in by_users.items()}
    ttft_p50 = {users: s.ttft_ms.p50 or 0.0 for users, s in by_users.items()}
    # 4 slots: at 8 users they are full (at 4, idle between a user's requests), so 16 add nothing but a wait.
    assert throughput[16] < 1.25 * throughput[8], throughput
    assert ttft_p50[16] > 2 * ttft_p50[2], ttft_p50  # past it, requests wait for a slot
