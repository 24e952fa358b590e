"""The stepped shape's options: users per step (--steps, or with --rates the cap on requests in flight),
and how long each step lasts."""

import pytest

from loadgen.options import parse_step_duration, step_users
from stampede.sweepfile import OPEN_LOOP_IN_FLIGHT


def test_closed_loop_steps_are_the_users_of_each_step() -> None:
    assert step_users("1,3", []) == [1, 3]
    assert step_users("", []) == [1, 2, 4, 8]


def test_an_open_loop_ladder_caps_requests_in_flight_by_the_first_value_or_256() -> None:
    assert step_users("32,64", [1.0, 2.0, 4.0]) == [32, 32, 32]
    # Not the closed-loop default's first step: one user would make the open loop a closed one.
    assert step_users("", [1.0, 2.0]) == [OPEN_LOOP_IN_FLIGHT] * 2 == [256, 256]


def test_a_bad_step_is_refused() -> None:
    with pytest.raises(ValueError, match="--steps"):
        step_users("0", [])


def test_a_step_lasts_its_seconds_or_auto() -> None:
    assert parse_step_duration("20") == 20.0
    assert parse_step_duration("auto") is None
    for bad in ("0", "soon"):
        with pytest.raises(ValueError, match="--step-duration-s"):
            parse_step_duration(bad)
