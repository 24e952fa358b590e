"""Open-loop schedules and the pacer, on a virtual clock."""

import statistics

import pytest

from loadgen.arrivals import Arrival, ArrivalSchedule, Pacer


def gaps(arrival: Arrival, rate: float, n: int = 20_000, burstiness: float = 1.0) -> list[float]:
    schedule = ArrivalSchedule(arrival, burstiness, seed=7)
    return [schedule.gap_s(rate) for _ in range(n)]


def test_constant_arrivals_are_evenly_spaced() -> None:
    assert set(gaps(Arrival.CONSTANT, 4.0, n=10)) == {0.25}


@pytest.mark.parametrize(("arrival", "burstiness", "cv2"), [(Arrival.POISSON, 1.0, 1.0), (Arrival.GAMMA, 4.0, 4.0)])
def test_random_arrivals_keep_the_mean_rate_and_their_burstiness(arrival, burstiness, cv2) -> None:
    g = gaps(arrival, 10.0, burstiness=burstiness)
    mean = statistics.fmean(g)
    assert mean == pytest.approx(0.1, rel=0.05)
    assert statistics.pvariance(g) / mean**2 == pytest.approx(cv2, rel=0.15)


def test_schedules_repeat_with_the_same_seed() -> None:
    assert gaps(Arrival.POISSON, 3.0, n=50) == gaps(Arrival.POISSON, 3.0, n=50)


class Clock:
    def __init__(self) -> None:
        self.now_ns = 1_000

    def __call__(self) -> int:
        return self.now_ns


def test_pacer_hands_out_due_times_at_the_rate_even_when_callers_are_late() -> None:
    clock = Clock()
    pacer = Pacer(ArrivalSchedule(Arrival.CONSTANT), clock)
    pacer.set_rate(10.0)
    assert pacer.reserve() == 1_000
    clock.now_ns += 5_000_000_000  # every user was busy for 5 s
    # The next due times are still 100 ms apart from the first: they are in the past now, and the
    # sends they stand for will carry their delay.
    assert pacer.reserve() == 1_000 + 100_000_000
    assert pacer.reserve() == 1_000 + 200_000_000


def test_pacer_restarts_its_schedule_on_a_rate_change_and_pauses_at_zero() -> None:
    clock = Clock()
    pacer = Pacer(ArrivalSchedule(Arrival.CONSTANT), clock)
    assert pacer.reserve() is None
    pacer.set_rate(2.0)
    pacer.reserve()
    clock.now_ns = 9_000_000_000
    pacer.set_rate(4.0)
    assert pacer.reserve() == 9_000_000_000
    assert pacer.reserve() == 9_250_000_000


def test_invalid_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        ArrivalSchedule(Arrival.GAMMA, burstiness=0)
    with pytest.raises(ValueError):
        ArrivalSchedule(Arrival.POISSON).gap_s(0)
