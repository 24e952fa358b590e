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
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from stampede import baseline, db, demo, report, schedules
from stampede.locust_launch import SweepError
from stampede.plan import FLAG_LABELS, SWEEP_FLAGS, SweepPlan, parse_list, sweep_from_flags
from stampede.processes import sigterm_as_interrupt
from stampede.records import Api
from stampede.schema import Run
from stampede.settings import get_settings, redact_url
from stampede.sweep import LOG_DIR, REGRESSION_EXIT, check_baseline, mark_interrupted, run_sweep
from stampede.sweepfile import OPEN_LOOP_IN_FLIGHT, load_sweep_file, validate_sweep
from stampede.table import format_summary

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.splitlines()[0])
db_app = typer.Typer(no_args_is_help=True, help="Manage the results database schema.")
app.add_typer(db_app, name="db")
schedule_app = typer.Typer(no_args_is_help=True, help="Sweeps run by the worker fleet on a cron expression.")
app.add_typer(schedule_app, name="schedule")
FORWARD = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}
DEMO_STEPS = "1,2,4,8,16,32,50"

StepsOpt = Annotated[str, typer.Option(help="Comma-separated concurrency levels, one step each.")]
StepDurationOpt = Annotated[
    str,
    typer.Option(
        help="Seconds each step lasts, or auto: each step ends once its window holds enough completed requests "
        "(--min-completions, and three E2E), within --max-step-duration-s."
    ),
]
MaxStepDurationOpt = Annotated[float, typer.Option(help="Longest a step of --step-duration-s auto lasts.")]
WarmupOpt = Annotated[float, typer.Option(help="Seconds left out of each step's figures after its load holds steady.")]
MinCompletionsOpt = Annotated[
    int, typer.Option(help="Completed requests a step's window needs; fewer marks the step too short.")
]
MaxTokensOpt = Annotated[int, typer.Option(help="Most output tokens asked per request.")]
PromptSetOpt = Annotated[str, typer.Option(help="seeds, synthetic:..., jsonl:PATH or sharegpt:PATH.")]
ProcessesOpt = Annotated[int, typer.Option(help="Locust processes (one per core that load needs).")]


def _text(numbers: tuple[int, ...]) -> str:
    return ",".join(map(str, numbers))


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _database_url() -> str:
    return get_settings().database_url.get_secret_value()


class _Terminal:
    """A sweep's progress on stderr: one line redrawn on a terminal, else a line per step."""

    def __init__(self) -> None:
        self.interactive = sys.stderr.isatty()
        self.last_step = ""

    def progress(self, step: str, line: str) -> None:
        if self.interactive:
            typer.echo(f"\r{line:<100}", nl=False, err=True)
        elif step != self.last_step:
            typer.echo(line, err=True)
        self.last_step = step

    def target_done(self) -> None:
        self.last_step = ""
        if self.interactive:
            typer.echo("", err=True)

    def note(self, line: str) -> None:
        typer.echo(line, err=True)


def _sweep(plan: SweepPlan, check: bool = False) -> None:
    """Run ``plan``, print the summary and, with ``check``, exit with status 3 on a regression."""
    result = run_sweep(plan, _Terminal())
    typer.echo(format_summary(result.summaries))
    problem = result.problem(plan.run_id)
    if problem is not None:
        raise SweepError(problem)
    if check:
        findings = check_baseline(plan)
        for finding in findings:
            typer.echo(f"regression: {finding.describe()}", err=True)
        if findings:
            raise typer.Exit(REGRESSION_EXIT)
        typer.echo("no regression against the baseline", err=True)


def _run(plan: SweepPlan, check: bool) -> None:
    sigterm_as_interrupt()
    try:
        _sweep(plan, check)
    except SweepError as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:
        mark_interrupted(plan)  # Locust marks a run it stopped itself; this also catches one between two targets
        typer.echo(
            f"interrupted: run {plan.run_id} and its load stopped; records not yet stored wait in $TMPDIR for "
            "`stampede replay`",
            err=True,
        )
        raise typer.Exit(130) from None


@app.command()
def sweep(
    host: Annotated[str, typer.Option(help="Base URL of the target runtime.")] = "",
    file: Annotated[Path | None, typer.Option(help="A sweep file (TOML or JSON); replaces the other options.")] = None,
    api: Annotated[Api, typer.Option(help="Wire protocol: Ollama's native API or the OpenAI API.")] = Api.OPENAI_CHAT,
    model: Annotated[str, typer.Option(help="Model name to request.")] = SWEEP_FLAGS.model,
    target_name: Annotated[str, typer.Option(help="Label of the target in reports.")] = "",
    runtime: Annotated[
        str, typer.Option(help="Sample the runtime's own statistics: vllm, llamacpp, ollama or none.")
    ] = "",
    steps: Annotated[
        str,
        typer.Option(
            help=f"Comma-separated concurrency levels, one step each (default {_text(SWEEP_FLAGS.steps)}); with "
            f"--rates, one value: the cap on requests in flight (default {OPEN_LOOP_IN_FLIGHT})."
        ),
    ] = "",
    rates: Annotated[str, typer.Option(help="Open loop: requests/s per step; --steps then caps in flight.")] = "",
    step_duration_s: StepDurationOpt = SWEEP_FLAGS.step_duration_s,
    max_step_duration_s: MaxStepDurationOpt = SWEEP_FLAGS.max_step_duration_s,
    warmup_s: WarmupOpt = SWEEP_FLAGS.warmup_s,
    min_completions: MinCompletionsOpt = SWEEP_FLAGS.min_completions,
    max_tokens: MaxTokensOpt = SWEEP_FLAGS.max_tokens,
    ignore_eos: Annotated[bool, typer.Option(help="Ask for exactly max tokens (vLLM, llama.cpp).")] = False,
    prompt_set: PromptSetOpt = SWEEP_FLAGS.prompt_set,
    processes: ProcessesOpt = SWEEP_FLAGS.processes,
    run_name: Annotated[str, typer.Option(help="Human label for the run.")] = "",
    run_id: Annotated[str, typer.Option(help="Id for the new run (default: a new UUID).")] = "",
    check: Annotated[
        bool, typer.Option(help="Compare with the sweep's baseline; exit status 3 on a regression.")
    ] = False,
) -> None:
    """Sweep a target through a ladder of load steps and print the summary."""
    if file is not None:
        try:
            spec = load_sweep_file(file)
        except ValueError as exc:
            raise _fail(f"{file}: {exc}") from None
    elif not host:
        raise _fail("give --host URL (or --file SWEEP.toml)")
    else:
        try:
            spec = sweep_from_flags(locals(), SWEEP_FLAGS)  # the options by name, as flags
        except ValueError as exc:
            raise _fail(str(exc)) from None
    try:
        chosen_id = uuid.UUID(run_id) if run_id else uuid.uuid4()
    except ValueError:
        raise _fail(f"not a run id: {run_id!r}") from None
    _run(SweepPlan(spec, run_id=chosen_id), check)


@app.command(name="demo")
def demo_command(
    steps: StepsOpt = DEMO_STEPS,
    step_duration_s: StepDurationOpt = "10",
    warmup_s: WarmupOpt = 4.0,
    max_tokens: MaxTokensOpt = 64,
    processes: ProcessesOpt = 1,
) -> None:
    """Sweep the built-in simulator, Ollama-like then vLLM-like, into the configured database."""
    sigterm_as_interrupt()
    try:
        with demo.simulators(LOG_DIR) as targets:  # stopped on the way out, however the sweep ends
            try:
                spec = validate_sweep(
                    {
                        "name": f"demo {time.strftime('%Y-%m-%d %H:%M')}",
                        "targets": [t.model_dump() for t in targets],
                        "steps": parse_list(steps, int, "--steps"),
                        "step_duration_s": step_duration_s,
                        "warmup_s": warmup_s,
                        "max_tokens": max_tokens,
                        "processes": processes,
                    },
                    FLAG_LABELS,
                )
            except ValueError as exc:
                raise _fail(str(exc)) from None
            _run(SweepPlan(spec), check=False)
    except KeyboardInterrupt:  # while the simulators start
        raise typer.Exit(130) from None


@app.command(name="report")
def report_command(
    run_id: Annotated[str, typer.Argument(help="Run to summarise (default: the latest).")] = "",
) -> None:
    """Print the summary table of a stored run."""
    with Session(db.get_engine(_database_url())) as session, session.begin():  # commits the summary cache
        if run_id:
            try:
                chosen = uuid.UUID(run_id)
            except ValueError:
                raise _fail(f"not a run id: {run_id!r}") from None
            if session.get(Run, chosen) is None:
                raise _fail(f"no run {chosen} in {redact_url(_database_url())}")
        else:
            latest = report.latest_run_id(session)
            if latest is None:
                raise _fail("no runs stored yet: run `stampede demo` or `stampede sweep` first")
            chosen = latest
        typer.echo(format_summary(report.step_summaries(session, chosen)))


@app.command()
def accept(run_id: Annotated[str, typer.Argument(help="Run to accept as its sweep's baseline.")]) -> None:
    """Accept a run as the baseline later runs of its sweep are compared with."""
    try:
        with Session(db.get_engine(_database_url())) as session, session.begin():
            baseline.accept_run(session, uuid.UUID(run_id))
    except ValueError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"run {run_id} is now the baseline of its sweep")


@schedule_app.command("add")
def schedule_add(
    name: Annotated[str, typer.Argument(help="Name of the schedule.")],
    cron: Annotated[str, typer.Option(help="When to run, e.g. '0 3 * * *' (UTC).")],
    file: Annotated[Path, typer.Option(help="The sweep file to run.")],
) -> None:
    """Run a sweep file on the worker fleet on a cron expression (replaces a schedule of that name)."""
    try:
        spec = load_sweep_file(file)
        with Session(db.get_engine(_database_url())) as session, session.begin():
            schedules.add_schedule(session, name, cron, spec)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"scheduled {name!r} at '{cron}': {spec.name}")


@schedule_app.command("list")
def schedule_list() -> None:
    """List scheduled sweeps."""
    with Session(db.get_engine(_database_url())) as session:
        for item in schedules.list_schedules(session):
            typer.echo(f"{item.name}\t{item.cron}\t{item.sweep['name']}\t{len(item.sweep['targets'])} target(s)")


@schedule_app.command("remove")
def schedule_remove(name: Annotated[str, typer.Argument(help="Name of the schedule.")]) -> None:
    """Stop running a scheduled sweep."""
    with Session(db.get_engine(_database_url())) as session, session.begin():
        if not schedules.remove_schedule(session, name):
            raise _fail(f"no schedule named {name!r}")
    typer.echo(f"removed {name!r}")


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
def replay(ctx: typer.Context) -> None:
    """Deliver what stopped Locust processes left behind (arguments go to `python -m loadgen.replay`)."""
    _forward(["loadgen.replay"], ctx)


@app.command(context_settings=FORWARD)
def scheduler(ctx: typer.Context) -> None:
    """Enqueue scheduled sweeps when due (arguments go to `python -m workers scheduler`)."""
    _forward(["workers", "scheduler"], ctx)


@app.command(context_settings=FORWARD)
def agent(ctx: typer.Context) -> None:
    """Run the GPU and runtime sampling agent (arguments go to `python -m workers agent`)."""
    _forward(["workers", "agent"], ctx)


def main() -> None:
    """The ``stampede`` command: the CLI, with a failing results store said in one line, not a traceback."""
    try:
        app()
    except (DBAPIError, db.SchemaError) as exc:
        typer.echo(f"error: {db.store_problem(exc, _database_url())}", err=True)
        raise SystemExit(2) from None
