"""Launch Locust headless for one target of a sweep, with its sampling agent, and read what it printed.

Locust runs as a subprocess with ``loadgen/chat.py`` and the step shape ``loadgen/steps.py``, exactly
as a user would run it, so a sweep and a hand-run Locust test share every line of load code. It gets
the plan whole (``--sweep-config``) with the target and the run id, and Locust's own flags; this
module imports nothing from ``loadgen``.
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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from stampede.plan import SweepPlan
from stampede.processes import stop
from stampede.records import Api
from stampede.sweepfile import TargetSpec

USER_CLASSES = {Api.OLLAMA_CHAT: "OllamaChatUser", Api.OPENAI_CHAT: "OpenAIChatUser"}


class SweepError(Exception):
    """A sweep that cannot start or finish; the message is meant for the user as is."""


def locustfiles() -> str:
    """Comma-separated paths of the chat locustfile and the step shape."""
    spec = importlib.util.find_spec("loadgen")
    if spec is None or not spec.submodule_search_locations:
        raise SweepError("the loadgen package is not installed: run `pip install -e .` in the repository")
    folder = Path(next(iter(spec.submodule_search_locations)))
    return f"{folder / 'chat.py'},{folder / 'steps.py'}"


def locust_command(target: TargetSpec, plan: SweepPlan) -> list[str]:
    """The Locust command line that runs ``plan`` against ``target``: the plan whole, which target and
    run, and Locust's own flags."""
    command = [
        sys.executable, "-m", "locust",
        "-f", locustfiles(),
        "--headless", "--json",
        "--host", target.url,
        "--sweep-config", plan.spec.model_dump_json(),
        "--target-name", target.name,
        "--run-id", str(plan.run_id),
        "--stop-timeout", f"{plan.stop_timeout_s:.0f}s",
        "--exit-code-on-error", "0",
    ]  # fmt: skip
    if plan.spec.processes > 1:
        command += ["--processes", str(plan.spec.processes)]
    return [*command, USER_CLASSES[target.api]]


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
