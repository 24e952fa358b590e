"""The simulator's tokenizer: how prompt text is counted and which words a sequence emits.

One rule counts both directions, so re-counting the generated text gives exactly the reported
completion tokens: a token is a run of word characters, one punctuation character, or one CJK character.
"""

from __future__ import annotations

import re

import orjson

_TOKEN_RE = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]|[^\W_]+|[^\w\s]|_")

_WORDS = """
the of and to in is that for it as was with be by on not he this are or his from at which but
have an they you were her she there been one all we their has would when if so no will can more
other about time into only some could them may then do first any my now such like our over man
me even most made after also did many before must through back years where much your way well
down should because each just those people how too little state good very make world still own
see men work long get here between both life being under never day same another know while last
might us great old year off come since against go came right used take three states himself few
house use during without again place american around however home small found thought went say
"""

VOCAB: tuple[str, ...] = tuple(" " + word for word in _WORDS.split())
"""Words a sequence emits, one per token, each with its leading space (as BPE vocabularies do)."""

VOCAB_JSON: tuple[bytes, ...] = tuple(orjson.dumps(word) for word in VOCAB)
"""Each word already encoded as a JSON string, so the streaming hot path only concatenates bytes."""


def count_tokens(text: str) -> int:
    """Number of tokens in ``text``: word runs, punctuation characters and CJK characters count one each."""
    return sum(1 for _ in _TOKEN_RE.finditer(text))


def tokenize(text: str) -> list[str]:
    """The tokens of ``text``, as :func:`count_tokens` counts them."""
    return _TOKEN_RE.findall(text)


def chat_tokens(messages: list[dict[str, object]]) -> list[str]:
    """Prompt tokens of a chat: each message's role plus its text content (string or OpenAI content parts)."""
    tokens: list[str] = []
    for message in messages:
        tokens += tokenize(str(message.get("role", "")))
        content = message.get("content")
        if isinstance(content, str):
            tokens += tokenize(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    tokens += tokenize(part["text"])
    return tokens


def count_chat_tokens(messages: list[dict[str, object]]) -> int:
    """Number of :func:`chat_tokens`."""
    return len(chat_tokens(messages))


def token_index(sequence_id: int, position: int) -> int:
    """Vocabulary index of the token at ``position`` of sequence ``sequence_id``: cheap and deterministic."""
    return (sequence_id * 131 + position * 37) % len(VOCAB)


def generated_text(sequence_id: int, n_tokens: int) -> str:
    """The full text a sequence emits in ``n_tokens`` tokens."""
    return "".join(VOCAB[token_index(sequence_id, i)] for i in range(n_tokens))
