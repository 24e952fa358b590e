"""--step-duration-s auto: a step has enough once it counts enough completions over three median E2E."""

from locust.stats import RequestStats

from loadgen.steps import Completions


def complete(stats: RequestStats, n: int, e2e_ms: int) -> None:
    for _ in range(n):
        stats.log_request("POST", "/v1/chat/completions", e2e_ms, 100)


def test_completions_count_from_the_mark_and_need_three_median_e2e() -> None:
    stats = RequestStats()
    complete(stats, 50, 20_000)  # before the mark: the ramp's, never counted
    completions = Completions(stats)
    completions.mark()
    complete(stats, 29, 4_000)
    assert not completions.enough(60.0, 30)  # 29 of 30
    complete(stats, 1, 4_000)
    assert not completions.enough(11.0, 30)  # 30, but 11 s is under three E2E of 4 s
    assert completions.enough(12.0, 30)
