"""One plan: hand-run Locust flags and ``stampede sweep``'s options are read by one function, each default is
defined once, and the plan a sweep hands Locust comes back out of Locust's options unchanged."""

import argparse
import inspect
import uuid
from typing import Any

import pytest

from loadgen.options import add_chat_arguments, add_step_arguments, plan_of
from stampede.cli import sweep as sweep_command
from stampede.locust_launch import locust_command
from stampede.plan import LOCUST_FLAGS, SWEEP_FLAGS, RunConfig, SweepPlan, locust_plan, sweep_from_flags
from stampede.records import Api
from stampede.sweepfile import OPEN_LOOP_IN_FLIGHT, SweepFile


def locust_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_chat_arguments(parser)
    add_step_arguments(parser)
    return parser


def hand_run(*argv: str) -> SweepFile:
    """The plan of ``locust -f loadgen/chat.py,loadgen/steps.py --host http://h:1 ARGV``."""
    options = locust_parser().parse_args(list(argv))
    return plan_of(options, "http://h:1", Api.OPENAI_CHAT, "h:1").sweep


def test_closed_loop_steps_are_the_users_of_each_step() -> None:
    assert hand_run("--steps", "1,3").step_users == [1, 3]
    assert hand_run().step_users == [1, 2, 4, 8]


def test_an_open_loop_ladder_caps_requests_in_flight_by_the_first_value_or_256() -> None:
    assert hand_run("--steps", "32,64", "--rates", "1,2,4").step_users == [32, 32, 32]
    # Not the closed-loop default's first step: one user would make the open loop a closed one.
    assert hand_run("--rates", "1,2").step_users == [OPEN_LOOP_IN_FLIGHT] * 2 == [256, 256]


def test_a_bad_step_is_refused() -> None:
    with pytest.raises(ValueError, match="--steps"):
        hand_run("--steps", "0")
    with pytest.raises(ValueError, match="--steps must be comma-separated numbers"):
        hand_run("--steps", "1,x")


def test_a_step_lasts_its_seconds_or_auto() -> None:
    assert hand_run("--step-duration-s", "20").step_duration_s == 20.0
    assert hand_run("--step-duration-s", "auto").step_duration_s == "auto"
    for bad in ("0", "soon"):
        with pytest.raises(ValueError, match="--step-duration-s"):
            hand_run("--step-duration-s", bad)


def test_hand_run_flags_become_the_typed_plan() -> None:
    plan = hand_run("--steps", "2,4", "--step-duration-s", "15", "--warmup-s", "3", "--max-tokens", "32",
                    "--model", "m", "--arrival", "gamma", "--burstiness", "2", "--seed", "7")  # fmt: skip
    assert (plan.steps, plan.step_duration_s, plan.warmup_s, plan.max_tokens) == ([2, 4], 15.0, 3.0, 32)
    assert (plan.arrival, plan.burstiness, plan.seed) == ("gamma", 2.0, 7)
    assert plan.targets[0].model_dump(exclude_none=True) == {
        "name": "h:1", "url": "http://h:1", "api": Api.OPENAI_CHAT, "model": "m"
    }  # fmt: skip


def test_a_sweep_survives_the_trip_through_locusts_command_line() -> None:
    spec = sweep_from_flags(
        {"host": "http://gpu:8000", "api": Api.OLLAMA_CHAT, "model": "llama", "steps": "1,2", "rates": "",
         "step_duration_s": "auto", "warmup_s": 2.0, "max_tokens": 64, "prompt_set": "synthetic:input=8,output=8",
         "ignore_eos": True},
        SWEEP_FLAGS,
    )  # fmt: skip
    plan = SweepPlan(spec, run_id=uuid.uuid4())
    command = locust_command(spec.targets[0], plan)
    options, rest = locust_parser().parse_known_args(command[3:])
    host = command[command.index("--host") + 1]
    back = plan_of(options, host, Api.OLLAMA_CHAT, options.target_name)
    assert back.from_sweep and back.sweep == spec and back.target == spec.targets[0]
    assert options.run_id == str(plan.run_id)
    # Nothing in the command says the plan a second time: besides it, only Locust's own flags.
    assert "--steps" not in command and "--model" not in command and "--warmup-s" not in command
    assert rest[-1] == "OllamaChatUser"


def test_each_command_lines_defaults_are_defined_once() -> None:
    locust = locust_parser().parse_args([])
    assert locust.step_duration_s == LOCUST_FLAGS.step_duration_s and locust.warmup_s == LOCUST_FLAGS.warmup_s
    assert (locust.max_tokens, locust.min_completions, locust.seed) == (
        SweepFile.model_fields["max_tokens"].default, SweepFile.model_fields["min_completions"].default, 0
    )  # fmt: skip
    cli: dict[str, Any] = {name: p.default for name, p in inspect.signature(sweep_command).parameters.items()}
    assert cli["step_duration_s"] == SWEEP_FLAGS.step_duration_s and cli["warmup_s"] == SWEEP_FLAGS.warmup_s
    assert cli["max_tokens"] == LOCUST_FLAGS.max_tokens == SweepFile.model_fields["max_tokens"].default
    # Left out, --steps means each command line's own ladder.
    assert sweep_from_flags({"host": "http://h:1"}, SWEEP_FLAGS).steps == SweepFile.model_fields["steps"].default
    assert locust_plan({"host": "http://h:1"}, "h").sweep.steps == list(LOCUST_FLAGS.steps)


def test_a_stored_config_gives_back_its_sweep() -> None:
    spec = sweep_from_flags({"host": "http://h:1", "run_name": "nightly"}, SWEEP_FLAGS)
    config = RunConfig(host="http://h:1", user_classes=["OpenAIChatUser"], model="m", max_tokens=8,
                       prompt_set="seeds", warmup_s=0, min_completions=30, request_rate=0, arrival="poisson",
                       burstiness=1, sweep=spec).model_dump(mode="json")  # fmt: skip
    assert RunConfig.stored_sweep(config) == spec
    assert RunConfig.stored_sweep({"host": "x"}) is None
