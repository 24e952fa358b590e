"""Profile layering: defaults, then a JSON/TOML profile file, then command-line flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator.cli import DEFAULT_PORTS, parse_args
from simulator.faults import FaultKind
from simulator.profiles import DEFAULTS, Flavor, build_profile


def test_defaults_apply_when_nothing_overrides_them() -> None:
    options = parse_args(["--profile", "vllm"])
    assert options.profile == DEFAULTS[Flavor.VLLM]
    assert options.port == DEFAULT_PORTS[Flavor.VLLM]
    assert options.profile.max_running == 256
    assert options.profile.prefix_caching  # as in vLLM V1
    assert not parse_args(["--profile", "vllm", "--no-enable-prefix-caching"]).profile.prefix_caching


def test_toml_file_overrides_defaults_and_flags_override_the_file(tmp_path: Path) -> None:
    path = tmp_path / "sim.toml"
    path.write_text(
        'max_running = 8\nstep_base_ms = 5.0\nmodels = ["a", "b"]\n[faults]\nafter_tokens = 7\n'
        "[faults.rates]\nhttp_429 = 0.25\n",
        encoding="utf-8",
    )
    options = parse_args(
        ["--profile", "ollama", "--profile-file", str(path), "--max-running", "2", "--fault-500", "0.5"]
    )
    profile = options.profile
    assert profile.max_running == 2
    assert profile.step_base_ms == 5.0
    assert profile.models == ("a", "b")
    assert profile.faults.after_tokens == 7
    assert profile.faults.rates == {FaultKind.HTTP_429: 0.25, FaultKind.HTTP_500: 0.5}
    assert profile.step_per_seq_ms == DEFAULTS[Flavor.OLLAMA].step_per_seq_ms


def test_json_file_and_repeated_model_flags(tmp_path: Path) -> None:
    path = tmp_path / "sim.json"
    path.write_text('{"kv_budget_tokens": 20000, "seed": 3}', encoding="utf-8")
    options = parse_args(["--profile", "llamacpp", "--profile-file", str(path), "--model", "x", "--model", "y"])
    assert options.profile.kv_budget_tokens == 20_000
    assert options.profile.seed == 3
    assert options.profile.models == ("x", "y")


def test_fault_window_flag_sets_the_schedule() -> None:
    plan = parse_args(["--fault-reset", "0.1", "--fault-window", "10:20"]).profile.faults
    assert (plan.window_start_s, plan.window_end_s) == (10.0, 20.0)
    assert plan.rates == {FaultKind.RESET: 0.1}


def test_unknown_keys_and_impossible_values_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown profile keys: max_slots"):
        build_profile(Flavor.OLLAMA, {"max_slots": 3})
    with pytest.raises(ValueError, match="kv_budget_tokens"):
        build_profile(Flavor.VLLM, {"kv_budget_tokens": 100})
    with pytest.raises(SystemExit):
        parse_args(["--fault-429", "0.8", "--fault-500", "0.8"])
