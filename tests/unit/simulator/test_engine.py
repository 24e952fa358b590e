"""The load model on a virtual clock: slots, batching, queueing, KV budget, prefill, load, determinism."""

from __future__ import annotations

import statistics

import pytest

from simulator.engine import ContextLengthError, Engine, QueueFullError, Sequence
from simulator.prefix_cache import prefix_block_ids
from simulator.profiles import Flavor, Profile, build_profile

MS = 1_000_000


def run_to_idle(engine: Engine) -> None:
    """Advance the virtual clock from step to step until nothing is left to do."""
    while (at_ns := engine.next_event_ns()) is not None:
        engine.advance(at_ns)


def burst(profile: Profile, n: int, prompt_tokens: int = 10, max_tokens: int = 100) -> list[Sequence]:
    """``n`` requests arriving together at t=0, run to completion."""
    engine = Engine(profile)
    seqs = [engine.submit(prompt_tokens, max_tokens, 0, ignore_eos=True) for _ in range(n)]
    run_to_idle(engine)
    return seqs


def output_tokens_per_s(seqs: list[Sequence]) -> float:
    makespan_ns = max(s.finished_ns or 0 for s in seqs)
    return sum(s.emitted for s in seqs) * 1e9 / makespan_ns


def mean_ttft_ms(seqs: list[Sequence]) -> float:
    return statistics.fmean((s.first_token_ns or 0) - s.arrived_ns for s in seqs) / MS


OLLAMA = build_profile(Flavor.OLLAMA, {"load_ms": 0})
VLLM = build_profile(Flavor.VLLM)


def test_ollama_throughput_flattens_at_its_slot_count_while_ttft_grows() -> None:
    by_n = {n: burst(OLLAMA, n) for n in (1, 2, 4, 8, 16)}
    tput = {n: output_tokens_per_s(seqs) for n, seqs in by_n.items()}
    assert tput[2] > 1.4 * tput[1]
    assert tput[4] > 1.2 * tput[2]
    assert tput[8] == pytest.approx(tput[4], rel=0.03)
    assert tput[16] == pytest.approx(tput[4], rel=0.03)
    ttft = {n: mean_ttft_ms(seqs) for n, seqs in by_n.items()}
    assert ttft[8] > 3 * ttft[4]
    assert ttft[16] > 1.8 * ttft[8]


def test_ollama_per_stream_speed_is_in_the_consumer_gpu_range() -> None:
    alone = burst(OLLAMA, 1)[0]
    full = burst(OLLAMA, 4)[0]
    for seq in (alone, full):
        decode_s = ((seq.finished_ns or 0) - (seq.first_token_ns or 0)) / 1e9
        assert 25 <= (seq.emitted - 1) / decode_s <= 120


def test_vllm_aggregate_throughput_rises_nearly_linearly_with_batch() -> None:
    single = output_tokens_per_s(burst(VLLM, 1))
    previous = single
    for n in (8, 16, 32, 64):
        tput = output_tokens_per_s(burst(VLLM, n))
        assert tput > 0.75 * n * single
        assert tput > previous
        previous = tput


def test_each_step_gives_one_token_to_every_running_sequence_and_slows_with_batch() -> None:
    engine = Engine(VLLM)
    for _ in range(3):
        engine.submit(0, 10, 0, ignore_eos=True)
    steps = []
    while (step := engine.advance(10**12)) is not None:
        steps.append(step)
    assert steps[0].end_ns - steps[0].start_ns == round((12.0 + 0.05 * 3) * MS)
    assert all(len(step.batch) == 3 for step in steps)
    assert len(steps) == 10


def test_kv_budget_keeps_requests_waiting_until_the_cache_frees_up() -> None:
    # Reserved at admission (llama.cpp's and Ollama's slots; vLLM's preemption off).
    profile = build_profile(Flavor.VLLM, {"kv_budget_tokens": 1_000, "max_model_len": 500, "preemption": False})
    engine = Engine(profile)
    first, second, third = (engine.submit(100, 300, 0, ignore_eos=True) for _ in range(3))
    assert engine.num_running == 2
    assert engine.num_waiting == 1
    assert engine.kv_usage == pytest.approx(0.8)
    run_to_idle(engine)
    assert third.admitted_ns == first.finished_ns
    assert (third.first_token_ns or 0) > (second.finished_ns or 0) - 1


def test_prefill_time_is_proportional_to_prompt_tokens() -> None:
    def ttft_ns(prompt_tokens: int) -> int:
        seq = burst(OLLAMA, 1, prompt_tokens=prompt_tokens)[0]
        return (seq.first_token_ns or 0) - seq.arrived_ns

    extra_ns = ttft_ns(3_000) - ttft_ns(1_000)
    assert extra_ns == pytest.approx(2_000 / OLLAMA.prefill_tokens_per_s * 1e9)


def test_output_lengths_are_seeded_and_have_the_profile_mean() -> None:
    def lengths(seed: int) -> list[int]:
        engine = Engine(build_profile(Flavor.VLLM, {"seed": seed, "mean_output_tokens": 50.0}))
        return [engine.submit(5, None, 0).target_tokens for _ in range(3_000)]

    assert lengths(7) == lengths(7)
    assert lengths(7) != lengths(8)
    assert statistics.fmean(lengths(7)) == pytest.approx(50.0, rel=0.1)


def test_max_tokens_caps_the_length_and_sets_finish_reason() -> None:
    engine = Engine(build_profile(Flavor.VLLM, {"mean_output_tokens": 1_000.0}))
    capped = engine.submit(5, 3, 0)
    natural = Engine(build_profile(Flavor.VLLM, {"mean_output_tokens": 1.0})).submit(5, 50, 0)
    assert (capped.target_tokens, capped.finish_reason) == (3, "length")
    assert (natural.target_tokens, natural.finish_reason) == (1, "stop")


def test_model_loads_on_first_use_and_unloads_after_keep_alive() -> None:
    profile = build_profile(Flavor.OLLAMA, {"load_ms": 500.0, "keep_alive_s": 10.0})
    engine = Engine(profile)
    cold = engine.submit(0, 2, 0, ignore_eos=True)
    joiner = engine.submit(0, 2, 100 * MS, ignore_eos=True)
    assert cold.load_wait_ns == 500 * MS
    assert joiner.load_wait_ns == 400 * MS
    run_to_idle(engine)
    assert cold.admitted_ns == joiner.admitted_ns == 500 * MS
    idle_since = cold.finished_ns or 0
    assert engine.loaded(idle_since + 9_000 * MS)
    warm = engine.submit(0, 1, idle_since + 9_000 * MS)
    run_to_idle(engine)
    assert warm.load_wait_ns == 0
    later = (warm.finished_ns or 0) + 10_001 * MS
    assert not engine.loaded(later)
    assert engine.submit(0, 1, later).load_wait_ns == 500 * MS
    assert engine.loads == 2


def test_cancelled_sequence_frees_its_slot_for_the_queue() -> None:
    profile = build_profile(Flavor.LLAMACPP, {"max_running": 1})
    engine = Engine(profile)
    running = engine.submit(0, 100, 0, ignore_eos=True)
    waiting = engine.submit(0, 1, 0, ignore_eos=True)
    engine.advance(engine.next_event_ns() or 0)
    engine.cancel(running)
    run_to_idle(engine)
    assert running.emitted == 1
    assert waiting.finished_ns is not None
    assert engine.kv_used_tokens == 0


def test_requests_beyond_the_queue_are_refused() -> None:
    engine = Engine(build_profile(Flavor.OLLAMA, {"max_queue": 1, "max_running": 1, "load_ms": 0}))
    engine.submit(0, 10, 0)
    engine.submit(0, 10, 0)
    with pytest.raises(QueueFullError):
        engine.submit(0, 10, 0)


def test_replicas_number_sequences_apart_and_draw_their_own_lengths() -> None:
    profile = build_profile(Flavor.VLLM, {"replicas": 2})
    first, second = Engine(profile, 0), Engine(profile, 1)
    a = [first.submit(0, None, 0) for _ in range(50)]
    b = [second.submit(0, None, 0) for _ in range(50)]
    assert [s.id for s in a[:3]] == [1, 3, 5]
    assert [s.id for s in b[:3]] == [2, 4, 6]
    assert [s.target_tokens for s in a] != [s.target_tokens for s in b]
    assert first.active == 50
    first.cancel(a[0])
    assert first.active == 49


def test_preload_makes_the_model_resident_and_starts_keep_alive_from_then() -> None:
    engine = Engine(build_profile(Flavor.OLLAMA, {"load_ms": 300.0, "keep_alive_s": 1.0}))
    assert engine.preload(0) == 300 * MS
    assert not engine.loaded(299 * MS)
    assert engine.loaded(1_299 * MS)
    assert not engine.loaded(1_300 * MS)
    assert engine.preload(100 * MS) == 200 * MS


def test_vllm_refuses_a_full_prompt_or_max_tokens_over_the_context_and_stops_output_at_its_end() -> None:
    engine = Engine(build_profile(Flavor.VLLM, {"max_model_len": 1_000}))
    with pytest.raises(ContextLengthError) as caught:
        engine.submit(900, 1_001, 0)
    assert (caught.value.prompt_tokens, caught.value.max_tokens, caught.value.limit) == (900, 1_001, 1_000)
    with pytest.raises(ContextLengthError):
        engine.submit(1_000, None, 0)
    capped = engine.submit(900, 200, 0, ignore_eos=True)
    assert (capped.target_tokens, capped.finish_reason) == (100, "length")
    unbounded = engine.submit(900, None, 0, ignore_eos=False)
    assert unbounded.target_tokens <= 100


def test_llamacpp_refuses_only_a_prompt_that_fills_the_context_and_stops_output_at_its_end() -> None:
    engine = Engine(build_profile(Flavor.LLAMACPP, {"max_model_len": 1_000}))
    with pytest.raises(ContextLengthError):
        engine.submit(1_000, 10, 0)
    capped = engine.submit(900, 500, 0, ignore_eos=True)
    assert (capped.target_tokens, capped.finish_reason) == (100, "length")


def test_ollama_keeps_the_end_of_a_long_prompt_and_generates_past_the_context() -> None:
    engine = Engine(build_profile(Flavor.OLLAMA, {"max_model_len": 1_000, "kv_budget_tokens": 1_000, "load_ms": 0}))
    seq = engine.submit(5_000, 2_000, 0, ignore_eos=True)
    assert seq.prompt_tokens == 1_000
    assert (seq.target_tokens, seq.finish_reason) == (2_000, "length")
    assert seq.kv_tokens == 1_000


def _ttft_ms(engine: Engine, prompt: list[str], at_ns: int) -> float:
    seq = engine.submit(len(prompt), 4, at_ns, ignore_eos=True, prefix_blocks=prefix_block_ids(prompt))
    run_to_idle(engine)
    return ((seq.first_token_ns or 0) - seq.arrived_ns) / MS


def test_a_cached_prefix_is_not_prefilled_again() -> None:
    engine = Engine(VLLM)
    system = [f"s{i}" for i in range(1_600)]  # a long shared system prompt: 100 blocks
    cold = _ttft_ms(engine, system + ["first", "question"], 0)
    warm = _ttft_ms(engine, system + ["another", "question"], 10_000 * MS)
    # 1,602 tokens at 12,000 tokens/s is 133.5 ms of prefill; with 1,600 cached, 2 tokens are left.
    assert cold - warm == pytest.approx(1_600 * 1_000 / VLLM.prefill_tokens_per_s, rel=0.01)
    assert (engine.prefix_queried_tokens, engine.prefix_hit_tokens) == (3_204, 1_600)
    # Only the prefix matches: the same words in another order share no block.
    assert _ttft_ms(engine, list(reversed(system)), 20_000 * MS) == pytest.approx(cold, rel=0.01)
    assert engine.prefix_hit_tokens == 1_600


def test_the_whole_prompt_is_never_cached_and_the_cache_forgets_the_least_recently_used() -> None:
    small = build_profile(Flavor.VLLM, {"kv_budget_tokens": 8_192})  # 512 blocks
    engine = Engine(small)
    prompt = [f"p{i}" for i in range(160)]  # exactly 10 blocks
    _ttft_ms(engine, prompt, 0)
    _ttft_ms(engine, prompt, 10_000 * MS)
    assert engine.prefix_hit_tokens == 144  # whole blocks, and the last token is always computed: 9 of 10
    for n in range(52):  # 52 other 10-block prompts push the first out of 512 blocks
        _ttft_ms(engine, [f"o{n}-{i}" for i in range(160)], (20_000 + n * 1_000) * MS)
    _ttft_ms(engine, prompt, 100_000 * MS)
    assert engine.prefix_hit_tokens == 144
    # On for the vLLM profile only (llama-server and Ollama reuse a slot's last prompt: not modelled).
    assert not Engine(OLLAMA).profile.prefix_caching


def test_prompts_arriving_together_are_looked_up_once_and_miss_each_other() -> None:
    engine = Engine(build_profile(Flavor.VLLM, {"load_ms": 500}))  # the step is rebuilt as each arrives
    prompt = [f"w{i}" for i in range(320)]
    seqs = [engine.submit(320, 4, 0, ignore_eos=True, prefix_blocks=prefix_block_ids(prompt)) for _ in range(3)]
    run_to_idle(engine)
    # Prefilled in the same step, none could use another's blocks; each was counted once.
    assert (engine.prefix_queried_tokens, engine.prefix_hit_tokens) == (960, 0)
    assert [s.cached_tokens for s in seqs] == [0, 0, 0]


def test_a_full_kv_cache_keeps_no_spare_prefixes() -> None:
    # Reserved at admission, so the two long requests fill the cache at once.
    engine = Engine(build_profile(Flavor.VLLM, {"kv_budget_tokens": 8_192, "preemption": False}))
    old = prefix_block_ids([f"old{i}" for i in range(160)])
    for at_ms in (0, 10_000):
        engine.submit(160, 4, at_ms * MS, ignore_eos=True, prefix_blocks=old)
        run_to_idle(engine)
    assert engine.prefix_hit_tokens == 144  # kept while memory was free
    # Two long requests reserve all 8,192 tokens of KV memory: blocks no running request uses give way.
    for n in range(2):
        engine.submit(16, 4_080, 20_000 * MS, ignore_eos=True, prefix_blocks=prefix_block_ids([f"b{n}"] * 16))
    again = engine.submit(160, 4, 20_000 * MS, ignore_eos=True, prefix_blocks=old)  # waits for memory
    run_to_idle(engine)
    assert again.cached_tokens == 0 and engine.prefix_hit_tokens == 144


def test_vllm_admits_by_the_prompt_and_preempts_the_last_admitted_when_the_cache_runs_out() -> None:
    engine = Engine(build_profile(Flavor.VLLM, {"kv_budget_tokens": 2_000, "max_model_len": 1_000}))
    seqs = [engine.submit(100, 800, 0, ignore_eos=True) for _ in range(3)]
    assert engine.num_running == 3 and engine.kv_used_tokens == 3 * 101  # prompts and first tokens only
    run_to_idle(engine)
    assert [s.emitted for s in seqs] == [800, 800, 800]  # every token came, once
    assert engine.preemptions >= 1 and engine.kv_used_tokens == 0
    first, _, last = seqs
    # The last admitted gave way: a gap of a whole recompute in its stream, none in the first's.
    assert (last.finished_ns or 0) > (first.finished_ns or 0)
    assert last.admitted_ns == first.admitted_ns == 0  # phases count from the first admission


def test_a_preempted_request_recomputes_its_prompt_and_what_it_generated() -> None:
    profile = build_profile(Flavor.VLLM, {"kv_budget_tokens": 1_000, "max_model_len": 1_000, "prefix_caching": False})
    engine = Engine(profile)
    keeper = engine.submit(100, 800, 0, ignore_eos=True)
    victim = engine.submit(100, 800, 0, ignore_eos=True)
    steps = []
    while (at_ns := engine.next_event_ns()) is not None:
        step = engine.advance(at_ns)
        if step is not None:
            steps.append(step)
    assert engine.preemptions == 1 and keeper.emitted == victim.emitted == 800
    readmitted = next(s for s in steps[1:] if s.admitted == 1)  # the first step admitted both
    assert readmitted.batch == [victim]  # it waited for the keeper to finish
    # Its prompt and the 400 tokens it had when two requests of 100 + 400 filled the 1,000 tokens.
    assert readmitted.prefill_tokens == 100 + 400


def test_a_request_arriving_as_a_step_begins_joins_it_without_the_running_ones_prefilling_again() -> None:
    engine = Engine(VLLM)
    running = engine.submit(1_000, 10, 0, ignore_eos=True)
    first_end = engine.next_event_ns() or 0
    engine.advance(first_end)  # the next step begins at once, with the running request in it
    joining = engine.submit(200, 10, first_end, ignore_eos=True)
    step = engine._step
    assert step is not None and step.batch == [running, joining] and step.prefill_tokens == 200
    assert running.admitted_ns == 0 and engine.kv_used_tokens == (1_000 + 2) + (200 + 1)


def test_a_preempted_request_is_looked_up_again_but_counted_once() -> None:
    engine = Engine(build_profile(Flavor.VLLM, {"kv_budget_tokens": 1_000, "max_model_len": 1_000}))
    prompts = [[f"{name}{i}" for i in range(100)] for name in ("a", "b")]
    for prompt in prompts:
        engine.submit(100, 800, 0, ignore_eos=True, prefix_blocks=prefix_block_ids(prompt))
    run_to_idle(engine)
    assert engine.preemptions == 1
    assert (engine.prefix_queried_tokens, engine.prefix_hit_tokens) == (200, 0)  # as vLLM exports them
    again = engine.submit(100, 4, 10**12, ignore_eos=True, prefix_blocks=prefix_block_ids(prompts[1]))
    run_to_idle(engine)
    assert again.cached_tokens == 96  # the preempted one's prompt stays usable


def test_a_prefix_many_requests_share_is_held_once_when_the_cache_is_full() -> None:
    engine = Engine(build_profile(Flavor.VLLM, {"kv_budget_tokens": 8_192, "preemption": False}))
    old = prefix_block_ids([f"old{i}" for i in range(160)])
    engine.submit(160, 4, 0, ignore_eos=True, prefix_blocks=old)
    run_to_idle(engine)
    shared = [f"s{i}" for i in range(160)]
    for n in range(4):  # 4 x 2,048 tokens fill the cache; their 10 shared blocks are held once
        engine.submit(161, 2_048 - 161, 10**12, ignore_eos=True, prefix_blocks=prefix_block_ids([*shared, f"q{n}"]))
    for _ in range(3):  # the shared prompt computed; the next steps trim
        engine.advance(engine.next_event_ns() or 0)
    assert len(engine._prefix_cache) == 10 and old[0] not in engine._prefix_cache
