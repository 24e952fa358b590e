"""The end-of-sweep table: one aligned line per step, goodput only with SLOs, saturation called out."""

from stampede.metrics import Percentiles
from stampede.report import TargetStep
from stampede.summary import StepSummary
from stampede.table import format_summary


def step(index: int, users: int, goodput: float | None = None, **kw: object) -> TargetStep:
    p = Percentiles(10.0, 20.0, 30.0)
    summary = StepSummary(users, 10.0, 50, 1, 4.9, 250.0, p, p, p, p, goodput_requests_per_s=goodput)
    return TargetStep("vllm-like", index, summary, **kw)  # type: ignore[arg-type]


def test_rows_align_and_carry_the_figures() -> None:
    lines = format_summary([step(0, 1), step(1, 16)]).splitlines()
    assert lines[0].split() == ["target", "step", "load", "in", "flight", "req/s", "out", "tok/s", "TTFT", "p50",
                                "TTFT", "p99",
                                "ITL", "p50", "ITL", "p99", "E2E", "p50", "E2E", "p99",
                                "errors", "reconnects"]  # fmt: skip
    assert lines[2].split() == ["vllm-like", "0", "1", "0.0", "4.90", "250.0", "10.0", "30.0", "10.0", "30.0", "10.0",
                                "30.0", "1/50", "0"]  # fmt: skip
    assert len({len(line) for line in lines[:2]}) == 1


def test_open_loop_steps_show_their_rate_and_slos_add_goodput() -> None:
    text = format_summary([step(0, 8, goodput=3.5, request_rate_per_s=5.0)])
    assert "goodput/s" in text.splitlines()[0]
    assert text.splitlines()[2].split()[2] == "5/s" and "3.50" in text.splitlines()[2]


def test_a_saturated_step_is_flagged_and_explained() -> None:
    text = format_summary([step(0, 1), step(1, 64, saturated=True)])
    assert text.splitlines()[3].endswith("generator saturated")
    assert not text.splitlines()[2].endswith("generator saturated")
    assert "the load generator ran out of CPU" in text


def test_chunks_read_late_are_counted_and_explained() -> None:
    p = Percentiles(10.0, 20.0, 30.0)
    late = StepSummary(64, 10.0, 50, 0, 5.0, 250.0, p, p, p, p, late_chunks=1234)
    text = format_summary([step(0, 1), TargetStep("vllm-like", 1, late, saturated=True)])
    assert text.splitlines()[3].endswith("generator saturated; 1,234 chunks read late")
    assert "late" not in text.splitlines()[2]
    assert "chunks read late: read with bytes that came after them, so timed up to their arrival" in text
    assert "chunks read late:" not in format_summary([step(0, 1)])


def test_reconnects_have_a_column_of_their_own_and_are_explained() -> None:
    p = Percentiles(10.0, 20.0, 30.0)
    reconnected = StepSummary(8, 10.0, 50, 0, 5.0, 250.0, p, p, p, p, reconnects=7)
    lines = format_summary([TargetStep("llamacpp", 0, reconnected)]).splitlines()
    assert lines[2].split()[-2:] == ["0/50", "7"]  # not errors: a column beside them
    assert "reconnects = requests sent again" in lines[-1]


def test_a_step_too_short_for_its_requests_says_how_long_to_make_it() -> None:
    stories = Percentiles(25_000.0, 26_000.0, 27_000.0)
    p = Percentiles(10.0, 20.0, 30.0)
    short = StepSummary(50, 25.0, 3, 0, 0.12, 2_600.0, p, p, p, stories, mean_in_flight=50.0, little_in_flight=3.0,
                        opened_after_s=6.0, needed_window_s=75.0)  # fmt: skip
    text = format_summary([step(0, 1), TargetStep("vllm", 1, short)])
    assert "too short for its requests: lengthen to 85 s" in text.splitlines()[3]
    assert "in flight ≠ completions/s × E2E (50.0 vs 3.0)" in text.splitlines()[3]
    assert "too short" not in text.splitlines()[2]
    assert "fewer than 30 completions in the window, or E2E p50 over a third of it" in text


def test_the_servers_own_count_stands_beside_the_clients_and_a_gap_is_flagged() -> None:
    p = Percentiles(10.0, 20.0, 30.0)
    agree = StepSummary(8, 10.0, 50, 0, 5.0, 1_000.0, p, p, p, p, server_output_tokens_per_s=1_000.0,
                        checked_output_tokens_per_s=1_010.0)  # fmt: skip
    apart = StepSummary(8, 10.0, 50, 0, 5.0, 1_000.0, p, p, p, p, server_output_tokens_per_s=1_000.0,
                        checked_output_tokens_per_s=900.0)  # fmt: skip
    lines = format_summary([TargetStep("vllm", 0, agree), TargetStep("vllm", 1, apart)]).splitlines()
    assert lines[0].split()[8:12] == ["server", "tok/s", "vs", "server"]
    assert lines[2].split()[6:8] == ["1,000.0", "+1.0%"] and not lines[2].endswith("count")
    assert lines[3].split()[6:8] == ["1,000.0", "-10.0%"] and lines[3].endswith("differs from the server's count")
    assert "server" not in format_summary([step(0, 1)]).splitlines()[0]


def test_a_step_that_lost_a_locust_worker_says_when_and_the_users_left() -> None:
    lost = step(0, 16, lost_workers=1, lost_after_s=10.4, users_left=8)
    text = format_summary([lost, step(1, 32)])
    assert text.splitlines()[2].endswith("lost 1 Locust worker(s) 10 s in: 8 of 16 users left")
    assert "lost" not in text.splitlines()[3]
    assert "workers stopped reporting to the master" in text
