"""Sweep files: what a valid one gives, and how a broken one is reported."""

import re

import pytest

from stampede.records import Api
from stampede.sweepfile import OPEN_LOOP_IN_FLIGHT, load_sweep_file, parse_sweep_file

EXAMPLE = """
name = "ollama vs vllm"
steps = [1, 4]
step_duration_s = 15
[slo]
ttft_ms = 500
[[targets]]
name = "ollama"
url = "http://127.0.0.1:11434"
api = "ollama_chat"
model = "llama3.2:1b"
[[targets]]
name = "vllm"
url = "http://127.0.0.1:8000"
model = "m"
"""


def test_a_toml_file_gives_targets_steps_slos_and_defaults() -> None:
    spec = parse_sweep_file(EXAMPLE, ".toml")
    assert [t.api for t in spec.targets] == [Api.OLLAMA_CHAT, Api.OPENAI_CHAT]
    assert spec.steps == [1, 4] and spec.step_duration_s == 15 and spec.warmup_s == 10
    assert spec.slo.ttft_ms == 500 and spec.slo.tpot_ms is None
    assert spec.regression.throughput_drop_pct == 10


def test_an_open_loop_sweep_without_steps_caps_requests_in_flight_at_256_not_at_one_user() -> None:
    open_loop = EXAMPLE.replace("steps = [1, 4]", "rates = [1.0, 2.0]")
    assert parse_sweep_file(open_loop, ".toml").steps == [OPEN_LOOP_IN_FLIGHT] == [256]
    capped = EXAMPLE.replace("steps = [1, 4]", "rates = [1.0, 2.0]\nsteps = [32]")
    assert parse_sweep_file(capped, ".toml").steps == [32]
    assert parse_sweep_file(EXAMPLE.replace("steps = [1, 4]\n", ""), ".toml").steps == [1, 2, 4, 8, 16, 32]


def test_json_round_trips(tmp_path) -> None:
    spec = parse_sweep_file(EXAMPLE, ".toml")
    path = tmp_path / "s.json"
    path.write_text(spec.model_dump_json())
    assert load_sweep_file(path) == spec


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('name = "x"\ntargets = []', "targets: List should have at least 1 item"),
        (EXAMPLE.replace('name = "vllm"', 'name = "ollama"'), "target names must be unique"),
        (EXAMPLE + "\nsurprise = 1", "surprise: Extra inputs are not permitted"),
        ("name = ", "not valid TOML"),
    ],
)
def test_problems_are_named(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_sweep_file(text, ".toml")


def test_an_unreadable_file_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(ValueError, match="cannot read"):
        load_sweep_file(tmp_path / "missing.toml")


@pytest.mark.parametrize(
    ("change", "problem", "message"),
    [
        ('url = "http://127.0.0.1:8000"', 'url = "127.0.0.1:8000"', "needs its scheme, e.g. http://127.0.0.1:8000"),
        ("step_duration_s = 15", "step_duration_s = 15\nwarmup_s = 15", "warmup_s: 15 s leaves nothing of a 15 s step"),
        ("step_duration_s = 15", "step_duration_s = 5", "warmup_s: 10 s leaves nothing of a 5 s step"),  # the default
        ("step_duration_s = 15", 'step_duration_s = 15\nprompt_set = "bogus"', "'bogus' is not seeds, synthetic:"),
        ("step_duration_s = 15", 'step_duration_s = "soon"', "step_duration_s: must be seconds or auto, got 'soon'"),
        ("step_duration_s = 15", "step_duration_s = 0", "step_duration_s: must be > 0 seconds, or auto"),
        ("step_duration_s = 15", 'step_duration_s = "auto"\nmax_step_duration_s = 8', "leaves nothing of a 8 s step"),
    ],
)
def test_mistakes_that_would_measure_nothing_are_refused(change: str, problem: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_sweep_file(EXAMPLE.replace(change, problem), ".toml")


def test_a_prompt_file_is_named_for_the_load_host() -> None:
    text = EXAMPLE.replace("step_duration_s = 15", 'step_duration_s = 15\nprompt_set = "jsonl:p.jsonl"')
    assert str(parse_sweep_file(text, ".toml").prompt_file) == "p.jsonl"
    assert parse_sweep_file(EXAMPLE, ".toml").prompt_file is None


def test_auto_steps_last_until_they_hold_enough_within_a_maximum() -> None:
    spec = parse_sweep_file(EXAMPLE.replace("step_duration_s = 15", 'step_duration_s = "auto"'), ".toml")
    assert spec.step_duration_s == "auto" and spec.longest_step_s == 600.0
    assert parse_sweep_file(EXAMPLE, ".toml").longest_step_s == 15
