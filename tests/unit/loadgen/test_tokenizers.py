"""Client-side token counting with a local HuggingFace tokenizer built in the test."""

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from loadgen.tokenizers import load_tokenizer


@pytest.fixture
def tokenizer_dir(tmp_path):
    vocab = {"[UNK]": 0, "hello": 1, "world": 2, ",": 3}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    return tmp_path


def test_counts_tokens_with_a_tokenizer_json_folder(tokenizer_dir) -> None:
    counter = load_tokenizer(str(tokenizer_dir))
    assert counter.count("hello, world") == 3
    assert counter.count("") == 0


def test_missing_tokenizer_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(ValueError, match="no tokenizer.json"):
        load_tokenizer(str(tmp_path))
