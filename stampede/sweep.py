"""Drive Locust headless through a ladder of concurrency steps, one target after another.

Locust runs as a subprocess with ``loadgen/chat.py`` and the step shape ``loadgen/steps.py``, exactly
as a user would run it, so a sweep and a hand-run Locust test share every line of load code. This
module only plans, launches, watches and reports; it imports nothing from ``loadgen``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from stampede.processes import stop
from stampede.records import Api, Outcome
from stampede.schema import Request, Step
from stampede.sweepfile import SweepFile, TargetSpec

USER_CLASSES = {Api.OLLAMA_CHAT: "OllamaChatUser", Api.OPENAI_CHAT: "OpenAIChatUser"}
PROBE_PATHS = {Api.OLLAMA_CHAT: "/api/tags", Api.OPENAI_CHAT: "/v1/models"}
PROBE_TIMEOUT_S = 3.0


class SweepError(Exception):
    """A sweep that cannot start or finish; the message is meant for the user as is."""


@dataclass(frozen=True)
class SweepPlan:
    """A sweep file bound to a run."""

    spec: SweepFile
    run_id: uuid.UUID = field(default_factory=uuid.uuid4)
    stop_timeout_s: float = 120.0

    @property
    def loads(self) -> list[int] | list[float]:
        """The load of each step: users (closed loop) or requests/s (open loop)."""
        return self.spec.rates or self.spec.steps

    @property
    def duration_s(self) -> float:
        """Longest the sweep of one target may take (auto steps may end sooner)."""
        return len(self.loads) * self.spec.longest_step_s


def check_reachable(target: TargetSpec, api_key: str | None = None) -> None:
    """Raise SweepError in one line if the target does not answer HTTP or refuses ``api_key``.

    The probe carries the key as the load will (``Authorization: Bearer``), so a target that needs
    one is judged with it.
    """
    url = target.url.rstrip("/") + PROBE_PATHS[target.api]
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=PROBE_TIMEOUT_S):
            return
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            hint = "the key in STAMPEDE_API_KEY" if api_key else "no key: set STAMPEDE_API_KEY"
            raise SweepError(f"target {target.name} ({target.url}) refused access: HTTP {exc.code} ({hint})") from None
        return  # it answers HTTP; the load itself will show what else is wrong
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SweepError(f"cannot reach target {target.name} at {target.url}: {reason}") from None


def locustfiles() -> str:
    """Comma-separated paths of the chat locustfile and the step shape."""
    spec = importlib.util.find_spec("loadgen")
    if spec is None or not spec.submodule_search_locations:
        raise SweepError("the loadgen package is not installed: run `pip install -e .` in the repository")
    folder = Path(next(iter(spec.submodule_search_locations)))
    return f"{folder / 'chat.py'},{folder / 'steps.py'}"


def locust_command(target: TargetSpec, plan: SweepPlan) -> list[str]:
    """The Locust command line that runs ``plan`` against ``target``."""
    spec = plan.spec
    command = [
        sys.executable, "-m", "locust",
        "-f", locustfiles(),
        "--headless", "--json",
        "--host", target.url,
        "--steps", ",".join(str(s) for s in spec.steps),
        "--step-duration-s", str(spec.step_duration_s),
        "--warmup-s", str(spec.warmup_s),
        "--min-completions", str(spec.min_completions),
        "--max-step-duration-s", str(spec.max_step_duration_s),
        "--max-tokens", str(spec.max_tokens),
        "--model", target.model,
        "--prompt-set", spec.prompt_set,
        "--arrival", spec.arrival,
        "--burstiness", str(spec.burstiness),
        "--seed", str(spec.seed),
        "--target-name", target.name,
        "--run-id", str(plan.run_id),
        "--run-name", spec.name,
        "--sweep-config", spec.model_dump_json(),
        "--stop-timeout", f"{plan.stop_timeout_s:.0f}s",
        "--exit-code-on-error", "0",
    ]  # fmt: skip
    if spec.rates:
        command += ["--rates", ",".join(str(r) for r in spec.rates)]
    if spec.ignore_eos:
        command.append("--ignore-eos")
    if spec.processes > 1:
        command += ["--processes", str(spec.processes)]
    return [*command, USER_CLASSES[target.api]]


@dataclass(frozen=True)
class Progress:
    """Where a target's sweep stands, as stored so far."""

    step_index: int | None
    requests: int
    errors: int


def read_progress(session: Session, run_id: uuid.UUID, target: str) -> Progress:
    """The current step and the stored request counts of one target of a run."""
    step = session.scalar(select(func.max(Step.index)).where(Step.run_id == run_id, Step.target == target))
    counts = session.execute(
        select(func.count(), func.count().filter(Request.outcome != Outcome.OK.value)).where(
            Request.run_id == run_id, Request.target == target
        )
    ).one()
    return Progress(step, counts[0], counts[1])


def common_errors(session: Session, run_id: uuid.UUID, target: str, limit: int = 3) -> list[tuple[str, int]]:
    """The most frequent error messages of a target's failed requests, with their counts."""
    count = func.count().label("n")
    rows = session.execute(
        select(func.coalesce(Request.error, Request.outcome), count)
        .where(Request.run_id == run_id, Request.target == target, Request.outcome != Outcome.OK.value)
        .group_by(func.coalesce(Request.error, Request.outcome))
        .order_by(count.desc())
        .limit(limit)
    ).all()
    return [(str(message), int(n)) for message, n in rows]


def sent_requests(locust_stdout: str) -> int:
    """Requests Locust counted, from its ``--json`` output (the master's list comes last)."""
    decoder, text = json.JSONDecoder(), locust_stdout.strip()
    last: list[dict[str, Any]] = []
    while text:
        last, end = decoder.raw_decode(text)  # with --processes each worker prints its own list first
        text = text[end:].strip()
    return sum(int(entry["num_requests"]) for entry in last)


def agent_command(target: TargetSpec, plan: SweepPlan) -> list[str] | None:
    """The sampling agent that scrapes the target's own statistics during its load, if it has any.

    It also samples this host's NVIDIA GPUs, if it has any (the target's, when both run here).
    """
    kind = target.scraped_runtime
    if kind is None:
        return None
    return [sys.executable, "-m", "workers", "agent", "--run-id", str(plan.run_id),
            "--scrape", kind, target.url, target.name]  # fmt: skip


def run_target(
    target: TargetSpec,
    plan: SweepPlan,
    log_path: Path,
    on_tick: Callable[[float], object],
    tick_s: float = 1.0,
) -> int:
    """Run Locust for one target, calling ``on_tick(elapsed_s)`` while it runs; returns requests sent."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log, tempfile.TemporaryFile("w+") as stats, _agent(target, plan, log_path):
        process = subprocess.Popen(locust_command(target, plan), stdout=stats, stderr=log)
        started = time.monotonic()
        try:
            while process.poll() is None:
                on_tick(time.monotonic() - started)
                time.sleep(tick_s)
        except BaseException:
            # Interrupted, terminated (see processes.sigterm_as_interrupt) or the progress read failed: never leave
            # the load running. Locust stops its users and flushes its records on SIGTERM.
            stop(process, plan.stop_timeout_s)
            raise
        if process.returncode != 0:
            raise SweepError(f"locust exited with status {process.returncode} for {target.name}; see {log_path}")
        stats.seek(0)
        try:
            return sent_requests(stats.read())
        except (ValueError, KeyError, TypeError) as exc:
            raise SweepError(f"could not read Locust's statistics for {target.name} ({exc}); see {log_path}") from None


@contextlib.contextmanager
def _agent(target: TargetSpec, plan: SweepPlan, log_path: Path) -> Iterator[None]:
    command = agent_command(target, plan)
    if command is None:
        yield
        return
    with log_path.with_suffix(".agent.log").open("w") as log:
        agent = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            yield
        finally:
            stop(agent)


# What a Locust process's sink says when it ends with records it could not deliver (loadgen.sinks).
_KEPT_LINE = re.compile(r"(\d+ records not stored.*`stampede replay [^`]*`)")


def kept_records(log_path: Path) -> list[str]:
    """The lines in a Locust log that say which records were kept in a file instead of stored, and
    the command that delivers them."""
    if not log_path.exists():
        return []
    return [m.group(1) for line in log_path.read_text(errors="replace").splitlines() if (m := _KEPT_LINE.search(line))]


def wait_until_stored(
    session_factory: Callable[[], Session], run_id: uuid.UUID, target: str, expected: int, timeout_s: float
) -> int:
    """Wait until ``expected`` request rows of a target are stored (RQ workers may lag); returns the count."""
    deadline = time.monotonic() + timeout_s
    while True:
        with session_factory() as session:
            stored = read_progress(session, run_id, target).requests
        if stored >= expected or time.monotonic() > deadline:
            return stored
        time.sleep(0.5)
