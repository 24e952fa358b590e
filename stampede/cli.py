"""The ``stampede`` command: sweeps, the demo, reports, and the entry points of the other parts.

``sim``, ``worker`` and ``agent`` hand their arguments to ``python -m simulator`` and
``python -m workers``: the core never imports those packages.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy.orm import Session

from stampede import db, demo, report
from stampede.records import Api
from stampede.settings import get_settings, redact_url
from stampede.sweep import SweepError, SweepPlan, Target, check_reachable, read_progress, run_target
from stampede.table import format_summary

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.splitlines()[0])
db_app = typer.Typer(no_args_is_help=True, help="Manage the results database schema.")
app.add_typer(db_app, name="db")

FORWARD = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}
DEMO_STEPS = "1,2,4,8,16,32,50"
LOG_DIR = Path(".stampede/logs")

StepsOpt = Annotated[str, typer.Option(help="Comma-separated concurrency levels, one step each.")]
StepDurationOpt = Annotated[float, typer.Option(help="Seconds each step lasts.")]
WarmupOpt = Annotated[float, typer.Option(help="Seconds at the start of each step left out of its figures.")]
MaxTokensOpt = Annotated[int, typer.Option(help="Most output tokens asked per request.")]
ProcessesOpt = Annotated[int, typer.Option(help="Locust processes (one per core that load needs).")]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _database_url() -> str:
    return get_settings().database_url.get_secret_value()


def _parse_steps(text: str) -> list[int]:
    try:
        steps = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise _fail(f"--steps must be comma-separated integers, got {text!r}") from None
    if not steps or min(steps) < 1:
        raise _fail(f"--steps needs at least one step and every step >= 1 user, got {text!r}")
    return steps


def _sweep(targets: list[Target], plan: SweepPlan) -> None:
    """Run ``plan`` on each target in turn, with a progress line, then print the summary."""
    url = _database_url()
    embedded = get_settings().redis_url is None
    if embedded:
        db.upgrade(url)
    engine = db.get_engine(url)
    interactive = sys.stderr.isatty()
    typer.echo(f"run {plan.run_id}: results in {redact_url(url)}", err=True)
    for target in targets:
        last_line = ""

        def tick(elapsed_s: float, target: Target = target) -> None:
            nonlocal last_line
            with Session(engine) as session:
                progress = read_progress(session, plan.run_id, target.name)
            step = "starting" if progress.step_index is None else f"step {progress.step_index + 1}/{len(plan.steps)}"
            users = "" if progress.step_index is None else f" ({plan.steps[progress.step_index]} users)"
            line = (
                f"{target.name}: {step}{users}  {elapsed_s:4.0f}/{plan.duration_s:.0f} s"
                f"  {progress.requests} requests stored, {progress.errors} errors"
            )
            if interactive:
                typer.echo(f"\r{line:<100}", nl=False, err=True)
            elif line.split("  ")[0] != last_line.split("  ")[0]:
                typer.echo(line, err=True)
            last_line = line

        run_target(target, plan, LOG_DIR / f"{plan.run_id}-{target.name}.log", tick)
        tick(plan.duration_s)
        if interactive:
            typer.echo("", err=True)
    with Session(engine) as session:
        typer.echo(format_summary(report.step_summaries(session, plan.run_id)))


@app.command()
def sweep(
    host: Annotated[str, typer.Option(help="Base URL of the target runtime.")],
    api: Annotated[Api, typer.Option(help="Wire protocol: Ollama's native API or the OpenAI API.")] = Api.OPENAI_CHAT,
    model: Annotated[str, typer.Option(help="Model name to request.")] = "stampede-sim",
    target_name: Annotated[str, typer.Option(help="Label of the target in reports.")] = "",
    steps: StepsOpt = "1,2,4,8,16,32",
    step_duration_s: StepDurationOpt = 20.0,
    warmup_s: WarmupOpt = 5.0,
    max_tokens: MaxTokensOpt = 128,
    prompt_set: Annotated[str, typer.Option(help="Prompt set to draw from.")] = "seeds",
    processes: ProcessesOpt = 1,
    run_name: Annotated[str, typer.Option(help="Human label for the run.")] = "",
) -> None:
    """Sweep one target through a ladder of concurrency steps and print the summary."""
    target = Target(name=target_name or host.split("://")[-1].rstrip("/"), url=host, api=api, model=model)
    plan = SweepPlan(
        steps=_parse_steps(steps),
        step_duration_s=step_duration_s,
        warmup_s=warmup_s,
        max_tokens=max_tokens,
        prompt_set=prompt_set,
        processes=processes,
        run_name=run_name,
    )
    try:
        check_reachable(target)
        _sweep([target], plan)
    except SweepError as exc:
        raise _fail(str(exc)) from None


@app.command(name="demo")
def demo_command(
    steps: StepsOpt = DEMO_STEPS,
    step_duration_s: StepDurationOpt = 10.0,
    warmup_s: WarmupOpt = 4.0,
    max_tokens: MaxTokensOpt = 64,
    processes: ProcessesOpt = 1,
) -> None:
    """Sweep the built-in simulator, Ollama-like then vLLM-like, into the configured database."""
    plan = SweepPlan(
        steps=_parse_steps(steps),
        step_duration_s=step_duration_s,
        warmup_s=warmup_s,
        max_tokens=max_tokens,
        processes=processes,
        run_name=f"demo {time.strftime('%Y-%m-%d %H:%M')}",
    )
    try:
        with demo.simulators(LOG_DIR) as targets:
            _sweep(targets, plan)
    except SweepError as exc:
        raise _fail(str(exc)) from None


@app.command(name="report")
def report_command(
    run_id: Annotated[str, typer.Argument(help="Run to summarise (default: the latest).")] = "",
) -> None:
    """Print the summary table of a stored run."""
    with Session(db.get_engine(_database_url())) as session:
        if run_id:
            try:
                chosen = uuid.UUID(run_id)
            except ValueError:
                raise _fail(f"not a run id: {run_id!r}") from None
        else:
            latest = report.latest_run_id(session)
            if latest is None:
                raise _fail("no runs stored yet: run `stampede demo` or `stampede sweep` first")
            chosen = latest
        typer.echo(format_summary(report.step_summaries(session, chosen)))


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Apply schema migrations to STAMPEDE_DATABASE_URL."""
    url = _database_url()
    db.upgrade(url, revision)
    typer.echo(f"database {redact_url(url)} is at {revision}")


def _forward(module: list[str], ctx: typer.Context) -> None:
    command = [sys.executable, "-m", *module, *ctx.args]
    if os.name == "posix":
        os.execv(sys.executable, command)
    raise typer.Exit(subprocess.call(command))


@app.command(context_settings=FORWARD)
def sim(ctx: typer.Context) -> None:
    """Run the simulated runtime (arguments go to `python -m simulator`; try --help)."""
    _forward(["simulator"], ctx)


@app.command(context_settings=FORWARD)
def worker(ctx: typer.Context) -> None:
    """Run an RQ worker that stores records (arguments go to `python -m workers`)."""
    _forward(["workers"], ctx)


@app.command(context_settings=FORWARD)
def agent(ctx: typer.Context) -> None:
    """Run the GPU and runtime sampling agent (arguments go to `python -m workers agent`)."""
    _forward(["workers", "agent"], ctx)
