"""Prompt sets: seeds, synthetic lengths, JSONL and ShareGPT files, and their errors."""

import orjson
import pytest

from loadgen.prompts import WORDS, PromptPicker, get_prompt_set


def test_seeds_hold_the_story_and_sky_prompts_in_two_languages() -> None:
    prompts = get_prompt_set("seeds")
    texts = [p.messages[0]["content"] for p in prompts]
    assert "Write a 1000-word story." in texts and "为什么天空是蓝色的？" in texts
    assert len({p.id for p in prompts}) == len(prompts)


def test_synthetic_fixed_lengths_are_exact_in_words_and_max_tokens() -> None:
    prompts = get_prompt_set("synthetic:input=32,output=64,count=5")
    assert len(prompts) == 5
    for p in prompts:
        words = p.messages[0]["content"].split()
        assert len(words) == 32 and set(words) <= set(WORDS)
        assert p.max_tokens == 64


def test_a_synthetic_system_message_is_one_shared_prefix_and_leaves_the_prompts_as_they_were() -> None:
    plain = get_prompt_set("synthetic:input=32,output=64,count=5")
    prompts = get_prompt_set("synthetic:input=32,output=64,count=5,system=700")
    assert {p.messages[0]["role"] for p in prompts} == {"system"}
    assert len({p.messages[0]["content"] for p in prompts}) == 1
    assert len(prompts[0].messages[0]["content"].split()) == 700
    assert [p.messages[1:] for p in prompts] == [p.messages for p in plain]


def test_synthetic_distributions_stay_in_range_and_repeat_with_a_seed() -> None:
    spec = "synthetic:input=uniform(10,20),output=normal(100,10),count=200,seed=3"
    prompts = get_prompt_set(spec)
    assert all(10 <= len(p.messages[0]["content"].split()) <= 20 for p in prompts)
    outputs = [p.max_tokens or 0 for p in prompts]
    assert 90 < sum(outputs) / len(outputs) < 110
    assert get_prompt_set(spec) == prompts


def test_jsonl_prompts_keep_their_ids_and_limits(tmp_path) -> None:
    path = tmp_path / "p.jsonl"
    rows = [{"id": "a", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5},
            {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "yo"}]}]  # fmt: skip
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in rows) + b"\n")
    prompts = get_prompt_set(f"jsonl:{path}")
    assert [p.id for p in prompts] == ["p.jsonl/a", "p.jsonl/2"]
    assert prompts[0].max_tokens == 5 and len(prompts[1].messages) == 2


def test_a_bad_jsonl_line_is_named(tmp_path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": "ok"}]}\n{"prompt": "no messages"}\n')
    with pytest.raises(ValueError, match="p.jsonl:2"):
        get_prompt_set(f"jsonl:{path}")


def test_sharegpt_sends_the_first_human_turn(tmp_path) -> None:
    path = tmp_path / "sg.json"
    data = [{"id": "x1", "conversations": [{"from": "human", "value": "Q1"}, {"from": "gpt", "value": "A1"}]},
            {"id": "x2", "conversations": [{"from": "gpt", "value": "only an answer"}]}]  # fmt: skip
    path.write_bytes(orjson.dumps(data))
    prompts = get_prompt_set(f"sharegpt:{path}")
    assert [(p.id, p.messages[0]["content"]) for p in prompts] == [("sg.json/x1", "Q1")]


@pytest.mark.parametrize(
    ("spec", "message"),
    [("nope", "unknown prompt set"), ("synthetic:input=5", "needs input=DIST"),
     ("synthetic:input=lots,output=5", "not a length distribution"), ("jsonl:/no/such/file", "not found")],
)  # fmt: skip
def test_bad_prompt_sets_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        get_prompt_set(spec)


def test_picker_is_deterministic_per_seed() -> None:
    prompts = get_prompt_set("seeds")
    a = [PromptPicker(prompts, 1).next().id for _ in range(3)]
    assert a == [PromptPicker(prompts, 1).next().id for _ in range(3)]
