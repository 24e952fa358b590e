"""The ``stampede`` command: sweeps, the demo, reports, and the entry points of the other parts.

``sim``, ``worker`` and ``agent`` hand their arguments to ``python -m simulator`` and
``python -m workers``: the core never imports those packages.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session

from stampede import baseline, db, demo, report, schedules, store
from stampede.metrics import MIN_COMPLETIONS
from stampede.preflight import StoreUnavailable, check_stores
from stampede.processes import sigterm_as_interrupt
from stampede.records import Api
from stampede.schema import Run
from stampede.settings import get_settings, redact_url
from stampede.sweep import (
    Progress,
    SweepError,
    SweepPlan,
    check_reachable,
    common_errors,
    kept_records,
    read_progress,
    run_target,
    wait_until_stored,
)
from stampede.sweepfile import OPEN_LOOP_IN_FLIGHT, SweepFile, TargetSpec, load_sweep_file, validate_sweep
from stampede.table import format_summary

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.splitlines()[0])
db_app = typer.Typer(no_args_is_help=True, help="Manage the results database schema.")
app.add_typer(db_app, name="db")
schedule_app = typer.Typer(no_args_is_help=True, help="Sweeps run by the worker fleet on a cron expression.")
app.add_typer(schedule_app, name="schedule")
REGRESSION_EXIT = 3
# In a fleet, records reach the database through RQ workers: give them this long to catch up.
STORE_WAIT_S = 120.0

FORWARD = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}
DEMO_STEPS = "1,2,4,8,16,32,50"
LOG_DIR = Path(".stampede/logs")

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
ProcessesOpt = Annotated[int, typer.Option(help="Locust processes (one per core that load needs).")]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _database_url() -> str:
    return get_settings().database_url.get_secret_value()


def _parse_list(text: str, kind: type[int] | type[float], flag: str) -> list[Any]:
    try:
        return [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise _fail(f"{flag} must be comma-separated numbers, got {text!r}") from None


# The sweep fields that command-line options set, named as the user typed them in error messages.
FLAGS = {
    "name": "--run-name",
    "targets.0.name": "--target-name",
    "targets.0.url": "--host",
    "targets.0.api": "--api",
    "targets.0.model": "--model",
    "targets.0.runtime": "--runtime",
    "steps": "--steps",
    "rates": "--rates",
    "step_duration_s": "--step-duration-s",
    "max_step_duration_s": "--max-step-duration-s",
    "warmup_s": "--warmup-s",
    "min_completions": "--min-completions",
    "max_tokens": "--max-tokens",
    "prompt_set": "--prompt-set",
    "processes": "--processes",
}


def _spec(labels: dict[str, str] = FLAGS, **fields: Any) -> SweepFile:
    try:
        return validate_sweep(fields, labels)
    except ValueError as exc:
        raise _fail(str(exc)) from None


def _sweep(plan: SweepPlan, check: bool = False) -> None:
    """Run ``plan`` on each target in turn, with a progress line, then print the summary.

    With ``check``, compare the run with its baseline and exit with status 3 on a regression.
    """
    url = _database_url()
    prompt_file = plan.spec.prompt_file
    if prompt_file is not None and not prompt_file.is_file():
        raise SweepError(f"prompt file {prompt_file} not found (--prompt-set {plan.spec.prompt_set})")
    api_key = get_settings().api_key
    for target in plan.spec.targets:  # all of them before any load, so a typo fails in seconds
        check_reachable(target, api_key.get_secret_value() if api_key is not None else None)
    try:
        # The sweep reads its results back, so the database is checked in a fleet too (a SQLite file
        # is created or upgraded; a PostgreSQL one behind is refused, naming `stampede db upgrade`).
        check_stores(get_settings(), database=True)
    except StoreUnavailable as exc:
        raise SweepError(str(exc)) from None
    engine = db.get_engine(url)
    interactive = sys.stderr.isatty()
    loads = plan.loads
    unit = "req/s" if plan.spec.rates else "users"
    typer.echo(f"run {plan.run_id}: results in {redact_url(url)}", err=True)
    failed_targets: list[str] = []
    unstored_targets: list[str] = []
    for target in plan.spec.targets:
        last_step = ""

        def tick(elapsed_s: float, target: TargetSpec = target) -> Progress:
            """Print the target's progress (a line per step when not a terminal); returns it."""
            nonlocal last_step
            with Session(engine) as session:
                progress = read_progress(session, plan.run_id, target.name)
            index = progress.step_index
            # Step numbers as the summary table, the dashboard and the store give them: from 0.
            step = "starting" if index is None else f"step {index} ({loads[index]} {unit}), {index + 1} of {len(loads)}"
            line = (
                f"{target.name}: {step}  {elapsed_s:4.0f}/{plan.duration_s:.0f} s"
                f"  {progress.requests} requests stored, {progress.errors} errors"
            )
            if interactive:
                typer.echo(f"\r{line:<100}", nl=False, err=True)
            elif step != last_step:
                typer.echo(line, err=True)
            last_step = step
            return progress

        log_path = LOG_DIR / f"{plan.run_id}-{target.name}.log"
        sent = run_target(target, plan, log_path, tick)
        kept = kept_records(log_path)
        # Records Locust kept in a file will not arrive by waiting: no wait then.
        wait_s = 0.0 if kept else STORE_WAIT_S
        stored = wait_until_stored(lambda: Session(engine), plan.run_id, target.name, sent, wait_s)
        progress = tick(plan.duration_s)
        if interactive:
            typer.echo("", err=True)
        for line in kept:
            typer.echo(f"{target.name}: {line}", err=True)
            unstored_targets.append(target.name)
        if stored < sent:
            typer.echo(f"warning: {sent - stored} of {sent} requests to {target.name} not stored yet", err=True)
            settings = get_settings()
            if settings.redis_url is not None and stored == 0 and not kept:
                typer.echo(
                    f"hint: records go through the RQ queue {settings.queue_name!r}; is a worker consuming it? "
                    "Start one with `stampede worker` (same STAMPEDE_REDIS_URL and STAMPEDE_DATABASE_URL); "
                    "what is queued is stored once it runs",
                    err=True,
                )
        with Session(engine) as session:
            errors = common_errors(session, plan.run_id, target.name)
        for message, count in errors:
            typer.echo(f"{target.name}: {count} of {progress.requests} requests failed: {message}", err=True)
        if progress.requests and progress.errors == progress.requests:
            failed_targets.append(target.name)
        with Session(engine) as session, session.begin():
            # Summarised now, at the end of the target's steps, and cached: reports need not rescan rows.
            summaries = report.step_summaries(session, plan.run_id)
    typer.echo(format_summary(summaries))
    if unstored_targets:
        raise SweepError(
            f"records of {', '.join(sorted(set(unstored_targets)))} were not stored, so the table above lacks them: "
            f"deliver them with the `stampede replay` command above, then `stampede report {plan.run_id}`"
        )
    if failed_targets:
        raise SweepError(f"every request to {', '.join(failed_targets)} failed: nothing was measured (see above)")
    if check:
        with Session(engine) as session, session.begin():
            try:
                findings = baseline.check_run(session, plan.run_id, plan.spec.regression)
            except baseline.IncompleteRun as exc:
                raise SweepError(str(exc)) from None
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
        # Locust marks a run it stopped itself; this also catches one stopped between two targets.
        steps = len(plan.loads) * len(plan.spec.targets)
        with contextlib.suppress(SQLAlchemyError), Session(db.get_engine(_database_url())) as session, session.begin():
            store.mark_stopped_unless_complete(session, plan.run_id, steps)
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
    model: Annotated[str, typer.Option(help="Model name to request.")] = "stampede-sim",
    target_name: Annotated[str, typer.Option(help="Label of the target in reports.")] = "",
    runtime: Annotated[
        str, typer.Option(help="Sample the runtime's own statistics: vllm, llamacpp, ollama or none.")
    ] = "",
    steps: Annotated[
        str,
        typer.Option(
            help="Comma-separated concurrency levels, one step each (default 1,2,4,8,16,32); with --rates, one "
            f"value: the cap on requests in flight (default {OPEN_LOOP_IN_FLIGHT})."
        ),
    ] = "",
    rates: Annotated[str, typer.Option(help="Open loop: requests/s per step; --steps then caps in flight.")] = "",
    step_duration_s: StepDurationOpt = "20",
    max_step_duration_s: MaxStepDurationOpt = 600.0,
    warmup_s: WarmupOpt = 5.0,
    min_completions: MinCompletionsOpt = MIN_COMPLETIONS,
    max_tokens: MaxTokensOpt = 128,
    ignore_eos: Annotated[bool, typer.Option(help="Ask for exactly max tokens (vLLM, llama.cpp).")] = False,
    prompt_set: Annotated[str, typer.Option(help="seeds, synthetic:..., jsonl:PATH or sharegpt:PATH.")] = "seeds",
    processes: ProcessesOpt = 1,
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
        name = target_name or host.split("://")[-1].rstrip("/")
        # Names not given are taken from the host: a mistake in them is one in --host.
        names_from = {
            "name": "--run-name" if run_name else "--host",
            "targets.0.name": "--target-name" if target_name else "--host",
        }
        spec = _spec(
            {**FLAGS, **names_from},
            name=run_name or name,
            targets=[{"name": name, "url": host, "api": api, "model": model, "runtime": runtime or None}],
            rates=_parse_list(rates, float, "--rates"),
            step_duration_s=step_duration_s,
            max_step_duration_s=max_step_duration_s,
            warmup_s=warmup_s,
            min_completions=min_completions,
            max_tokens=max_tokens,
            ignore_eos=ignore_eos,
            prompt_set=prompt_set,
            processes=processes,
            **({"steps": _parse_list(steps, int, "--steps")} if steps else {}),
        )
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
            spec = _spec(
                name=f"demo {time.strftime('%Y-%m-%d %H:%M')}",
                targets=[t.model_dump() for t in targets],
                steps=_parse_list(steps, int, "--steps"),
                step_duration_s=step_duration_s,
                warmup_s=warmup_s,
                max_tokens=max_tokens,
                processes=processes,
            )
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
