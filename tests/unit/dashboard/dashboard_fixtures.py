"""Builders for the dashboard tests: a results store seeded with known figures, and page helpers.

``seed_sweep`` writes a run whose figures are known exactly: every request of a step has the same
timings, so each percentile equals that timing, and counts are chosen to make rates round numbers.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from sqlalchemy import update
from sqlalchemy.orm import Session
from streamlit.testing.v1 import AppTest

from stampede import store
from stampede.db import get_engine
from stampede.records import Api, LoadgenSampleRecord, Outcome, RequestRecord, RunRecord, RunStatus, StepRecord
from stampede.samples import GpuSampleRecord, RuntimeSampleRecord
from stampede.schema import Step

APP = str(Path(__file__).resolve().parents[3] / "dashboard" / "app.py")
T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
STEP_S = 12.0
WARMUP_S = 2.0
NS_PER_MS = 1_000_000


@dataclass(frozen=True)
class TargetProfile:
    """How a simulated target behaves at a concurrency: one timing for all requests of a step."""

    ttft_ms: Callable[[int], float]
    itl_ms: Callable[[int], float]
    tokens: int = 10
    errors: Callable[[int], int] = field(default=lambda users: 0)


OLLAMA_LIKE = TargetProfile(ttft_ms=lambda u: 100.0 * u, itl_ms=lambda u: 20.0 + u)
VLLM_LIKE = TargetProfile(ttft_ms=lambda u: 50.0 + 10.0 * u, itl_ms=lambda u: 10.0 + u / 4)


def requests_per_step(users: int) -> int:
    """Successful measured requests of a step: 5 per user, i.e. ``users / 2`` requests/s over 10 s."""
    return 5 * users


@dataclass
class Seeder:
    """Writes runs into one database; each call returns the new run's id."""

    url: str

    def sweep(
        self,
        name: str = "sweep",
        users: tuple[int, ...] = (1, 2, 4, 8),
        targets: dict[str, TargetProfile] | None = None,
        started_at: datetime = T0,
        status: RunStatus = RunStatus.FINISHED,
        ended_steps: int | None = None,
        slo: dict[str, float] | None = None,
        rates: tuple[float, ...] | None = None,
        saturated_steps: tuple[int, ...] = (),
        late_chunks: dict[int, int] | None = None,
        min_completions: int = 5,
    ) -> uuid.UUID:
        """A run stepping through ``users`` (or open-loop ``rates``) against each target; the first
        ``ended_steps`` steps ended; the load generator of ``saturated_steps`` lagged 25 ms, and in
        the first ``late_chunks[i]`` successful requests of step ``i`` read their first chunk late.
        A step holds 5 completions per user: with ``min_completions`` above 5 the 1-user steps are too
        short."""
        targets = targets or {"ollama-like": OLLAMA_LIKE, "vllm-like": VLLM_LIKE}
        run_id = uuid.uuid4()
        ended = len(users) if ended_steps is None else ended_steps
        with Session(get_engine(self.url)) as session, session.begin():
            run_end = started_at + timedelta(seconds=STEP_S * len(users))
            store.upsert_run(
                session,
                RunRecord(
                    id=run_id,
                    name=name,
                    status=status,
                    started_at=started_at,
                    ended_at=run_end if status is not RunStatus.RUNNING else None,
                    config={
                        "sweep": {"name": name, "steps": list(users), "slo": slo or {}},
                        "min_completions": min_completions,
                    },
                ),
            )
            for target, profile in targets.items():
                api = Api.OLLAMA_CHAT if target.startswith("ollama") else Api.OPENAI_CHAT
                for index, u in enumerate(users):
                    step_start = started_at + timedelta(seconds=STEP_S * index)
                    store.upsert_step(
                        session,
                        StepRecord(
                            run_id=run_id,
                            target=target,
                            index=index,
                            users=u,
                            request_rate_per_s=None if rates is None else rates[index],
                            api=api,
                            model="qwen2.5:0.5b",
                            base_url=f"http://127.0.0.1/{target}",
                            started_at=step_start,
                            warmup_s=WARMUP_S,
                            ended_at=step_start + timedelta(seconds=STEP_S) if index < ended else None,
                        ),
                    )
                    # The window as a first summary stores it, fixed here so that every step's is 10 s.
                    session.execute(
                        update(Step)
                        .where(Step.run_id == run_id, Step.target == target, Step.index == index)
                        .values(window_opened_at=step_start + timedelta(seconds=WARMUP_S), load_reached=True)
                    )
                    records = _step_requests(
                        run_id, target, api, index, u, step_start, profile, (late_chunks or {}).get(index, 0)
                    )
                    store.insert_request_records(session, records)
                    store.insert_loadgen_samples(
                        session,
                        [
                            LoadgenSampleRecord(
                                run_id=run_id, target=target, step_index=index, host="loadgen-0", pid=100,
                                sampled_at=step_start + timedelta(seconds=5), cpu_pct=40.0,
                                loop_lag_ms=25.0 if index in saturated_steps else 1.0,
                            )
                        ],
                    )  # fmt: skip
        return run_id

    def telemetry(self, run_id: uuid.UUID, seconds: int = 48, cache_prefix: str = "vllm:prefix_cache") -> None:
        """One GPU reading and vLLM and Ollama gauges and counters per second: utilisation climbs 2 % a second."""
        with Session(get_engine(self.url)) as session, session.begin():
            at = [T0 + timedelta(seconds=s) for s in range(seconds)]
            store.insert_gpu_samples(
                session,
                [
                    GpuSampleRecord(
                        run_id=run_id, host="gpu-host", sampled_at=t, gpu_index=0, gpu_uuid="GPU-0", name="H100",
                        utilization_pct=2.0 * s, memory_used_bytes=(40 + s) * 2**30, memory_total_bytes=80 * 2**30,
                        power_w=100.0 + 5 * s, temperature_c=50.0, sm_clock_mhz=1980.0,
                    )
                    for s, t in enumerate(at)
                ],
            )  # fmt: skip
            gauges = {
                ("vllm-like", "vllm:kv_cache_usage_perc"): lambda s: s / seconds,
                ("vllm-like", "vllm:num_requests_running"): lambda s: float(s // 12 + 1),
                ("vllm-like", "vllm:num_requests_waiting"): lambda s: float(s // 24),
                ("ollama-like", "ollama:size_bytes"): lambda s: 2.0 * 2**30,
                ("ollama-like", "ollama:size_vram_bytes"): lambda s: 1.5 * 2**30,
                # Counters: 2 preemptions a second from 24 s on; 1,000 prompt tokens queried a second, 750 cached.
                ("vllm-like", "vllm:num_preemptions_total"): lambda s: 2.0 * max(0, s - 24),
                ("vllm-like", f"{cache_prefix}_queries_total"): lambda s: 1000.0 * s,
                ("vllm-like", f"{cache_prefix}_hits_total"): lambda s: 750.0 * s,
            }
            store.insert_runtime_samples(
                session,
                [
                    RuntimeSampleRecord(
                        run_id=run_id, target=target, host="scraper", sampled_at=t, metric=metric,
                        labels={"model": "qwen2.5:0.5b"}, value=value(s),
                    )
                    for (target, metric), value in gauges.items()
                    for s, t in enumerate(at)
                ],
            )  # fmt: skip


def _step_requests(
    run_id: uuid.UUID,
    target: str,
    api: Api,
    index: int,
    users: int,
    step_start: datetime,
    profile: TargetProfile,
    late: int = 0,
) -> list[RequestRecord]:
    ttft_ns = int(profile.ttft_ms(users) * NS_PER_MS)
    gap_ns = int(profile.itl_ms(users) * NS_PER_MS)
    offsets = [ttft_ns + k * gap_ns for k in range(profile.tokens)]
    common = {
        "run_id": run_id,
        "target": target,
        "step_index": index,
        "host": f"loadgen-{index % 2}",
        "pid": 100 + index,
        "api": api,
        "model": "qwen2.5:0.5b",
        "prompt_id": "p0",
    }
    n_ok = requests_per_step(users)
    # Ollama reports its own total: the server's account ends 5 ms before the client's.
    server = {"total_ms": offsets[-1] / NS_PER_MS - 5.0} if api is Api.OLLAMA_CHAT else {}
    records = [
        RequestRecord(
            **common,
            in_warmup=False,
            outcome=Outcome.OK,
            http_status=200,
            # Spread over the 10 s window so that each starts and ends inside it: every token arrives in it.
            started_at=step_start + timedelta(seconds=WARMUP_S + (10.0 - offsets[-1] / 1e9) * k / n_ok),
            chunk_offsets_ns=offsets,
            late_chunks=[0] if k < late else [],
            end_offset_ns=offsets[-1],
            output_tokens=profile.tokens,
            # The first request of an Ollama run waited for the model to load.
            server_timings_ms=server | ({"load_ms": 200.0} if server and index == 0 and k == 0 else {}),
        )
        for k in range(n_ok)
    ]
    # A warm-up request slower than the rest, sent as the step starts and ended 1.8 s into its 2 s warm-up:
    # it must never show in any figure.
    slow = [round(o * 1.8e9 / offsets[-1]) for o in offsets]
    records.append(
        RequestRecord(
            **common,
            in_warmup=True,
            outcome=Outcome.OK,
            http_status=200,
            started_at=step_start,
            chunk_offsets_ns=slow,
            end_offset_ns=slow[-1],
            output_tokens=profile.tokens,
        )
    )
    records += [
        RequestRecord(
            **common,
            in_warmup=False,
            outcome=Outcome.HTTP_ERROR,
            http_status=503,
            error="503 Service Unavailable",
            started_at=step_start + timedelta(seconds=WARMUP_S + 5.0),
            end_offset_ns=5 * NS_PER_MS,
        )
        for _ in range(profile.errors(users))
    ]
    return records


def run_app(page: str | None = None) -> AppTest:
    """The dashboard run once, on its default page or switched to ``page`` (a file in views/)."""
    at = AppTest.from_file(APP, default_timeout=30)
    at.run()
    if page is not None:
        at.switch_page(f"views/{page}").run()
    assert not at.exception, at.exception
    return at


def _decode(node: Any) -> Any:
    # Plotly ships numeric arrays as {"dtype", "bdata"} (base64 of the raw buffer); tests want lists.
    if isinstance(node, dict):
        if set(node) == {"dtype", "bdata"}:
            return np.frombuffer(base64.b64decode(node["bdata"]), dtype=node["dtype"]).tolist()
        return {k: _decode(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_decode(v) for v in node]
    return node


def figures(at: AppTest) -> dict[str, dict[str, Any]]:
    """The page's plotly figures keyed by title, with arrays decoded to plain lists."""
    out = {}
    for element in at.get("plotly_chart"):
        fig = _decode(orjson.loads(element.proto.spec))
        out[fig["layout"]["title"]["text"]] = fig
    return out
