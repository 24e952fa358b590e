"""Seeded fault draws and the simulator's token counting rule."""

from __future__ import annotations

from collections import Counter

import pytest

from simulator.faults import FaultKind, FaultPicker, FaultPlan
from simulator.tokens import count_chat_tokens, count_tokens, generated_text


def draws(plan: FaultPlan, seed: int, n: int = 4_000, elapsed_s: float = 0.0) -> list[FaultKind | None]:
    picker = FaultPicker(plan, seed)
    return [picker.pick(elapsed_s) for _ in range(n)]


PLAN = FaultPlan(rates={FaultKind.HTTP_429: 0.2, FaultKind.RESET: 0.1})


def test_fault_draws_are_seeded_and_follow_the_rates() -> None:
    assert draws(PLAN, 1) == draws(PLAN, 1)
    assert draws(PLAN, 1) != draws(PLAN, 2)
    counts = Counter(draws(PLAN, 1))
    assert counts[FaultKind.HTTP_429] / 4_000 == pytest.approx(0.2, abs=0.03)
    assert counts[FaultKind.RESET] / 4_000 == pytest.approx(0.1, abs=0.03)
    assert set(counts) == {FaultKind.HTTP_429, FaultKind.RESET, None}


def test_rates_apply_only_inside_the_window_and_a_header_forces_a_fault() -> None:
    plan = FaultPlan(rates={FaultKind.HTTP_500: 1.0}, window_start_s=5.0, window_end_s=6.0)
    assert draws(plan, 0, 10, elapsed_s=4.9) == [None] * 10
    assert draws(plan, 0, 10, elapsed_s=5.5) == [FaultKind.HTTP_500] * 10
    assert FaultPicker(FaultPlan(), 0).pick(0.0, forced="Stall") is FaultKind.STALL
    with pytest.raises(ValueError):
        FaultPicker(FaultPlan(), 0).pick(0.0, forced="explode")


def test_token_rule_counts_words_punctuation_and_cjk_characters() -> None:
    assert count_tokens("Hello, world!") == 4
    assert count_tokens("你好世界") == 4
    assert count_tokens("snake_case x2") == 4
    assert count_chat_tokens([{"role": "user", "content": [{"type": "text", "text": "two words"}]}]) == 3


def test_generated_text_recounts_to_exactly_the_tokens_emitted() -> None:
    for n in (1, 17, 500):
        assert count_tokens(generated_text(42, n)) == n
    assert generated_text(1, 20) != generated_text(2, 20)
