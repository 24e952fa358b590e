"""Writes a tiny random-weight llama model as GGUF, for the tests against real llama.cpp servers.

No download: the tokenizer is a GPT-2-style byte-level BPE built here (the 256 byte tokens, merges
learned from a fixed English text, and ChatML's special tokens), with a ChatML chat template, so
llama.cpp tokenizes, templates and counts tokens as it does for a real model. The weights are random
(the output is gibberish; what a load test needs is the work per token, not the words) and the same
for the same seed, so two runs load byte-identical files. About 5 MB with the defaults.

    python scripts/make_tiny_gguf.py tiny.gguf [--seed 0] [--layers 4] [--embedding 256] [--hf-tokenizer DIR]

``--hf-tokenizer DIR`` also writes the same tokenizer as a Hugging Face tokenizer folder, for peer
tools (AIPerf, GuideLLM) that size their prompts with one.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path

import gguf
import numpy as np
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# The text the merges are learned from: ordinary English, so prompts tokenize to fewer tokens
# than bytes, as with a real tokenizer.
MERGE_TEXT = """
The quick brown fox jumps over the lazy dog. A load test measures how a server behaves when many
users send requests at the same time: the time to the first token, the time between tokens, and the
number of tokens per second it can produce for all of them together. Write a short story about a
lighthouse keeper who finds a message in a bottle. Explain the difference between a process and a
thread, and give an example of when you would use each one. Summarize the history of the printing
press in three sentences. What are the main causes of inflation, and how do central banks respond?
"""
# GPT-2's pre-tokenizer split (words with their leading space, numbers, punctuation, spaces).
PRE_TOKENIZER = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+""")


def byte_symbols() -> list[str]:
    """GPT-2's printable stand-in for each byte, in byte order (the byte-level BPE alphabet)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols: dict[int, str] = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in symbols:
            symbols[b] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def learn_merges(n_merges: int) -> tuple[list[str], list[str]]:
    """BPE merges learned from MERGE_TEXT, most frequent pair first; returns (merged tokens, merges)."""
    alphabet = byte_symbols()
    words = Counter(
        tuple(alphabet[b] for b in piece.encode()) for piece in PRE_TOKENIZER.findall(MERGE_TEXT.replace("\n", " "))
    )
    tokens: list[str] = []
    merges: list[str] = []
    while len(merges) < n_merges:
        pairs: Counter[tuple[str, str]] = Counter()
        for word, count in words.items():
            for pair in zip(word, word[1:], strict=False):
                pairs[pair] += count
        if not pairs:
            break
        # Ties broken by the pair itself, so the merges never depend on dict order.
        best = max(pairs.items(), key=lambda item: (item[1], item[0]))[0]
        merged = best[0] + best[1]
        tokens.append(merged)
        merges.append(f"{best[0]} {best[1]}")
        words = Counter({merge_pair(word, best, merged): count for word, count in words.items()})
    return tokens, merges


def merge_pair(word: tuple[str, ...], pair: tuple[str, str], merged: str) -> tuple[str, ...]:
    out: list[str] = []
    i = 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(merged)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def vocabulary(n_merges: int) -> tuple[list[str], list[str]]:
    """The tokens in id order (bytes, merged pieces, special tokens) and the merges."""
    merged, merges = learn_merges(n_merges)
    return [*byte_symbols(), *merged, *SPECIAL_TOKENS], merges


def write_hf_tokenizer(directory: Path, n_merges: int) -> None:
    """The model's tokenizer as a Hugging Face folder (``tokenizer.json`` and its config)."""
    tokens, merges = vocabulary(n_merges)
    bpe = models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=[tuple(m.split(" ")) for m in merges])
    tokenizer = Tokenizer(bpe)
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(t, special=True) for t in SPECIAL_TOKENS])
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(directory / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 8192, "eos_token": "<|im_end|>",
              "bos_token": "<|endoftext|>", "chat_template": CHATML_TEMPLATE}  # fmt: skip
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


def write_model(path: Path, seed: int, n_layers: int, n_embd: int, n_merges: int) -> None:
    tokens, merges = vocabulary(n_merges)
    types = [gguf.TokenType.NORMAL] * (len(tokens) - len(SPECIAL_TOKENS)) + [gguf.TokenType.CONTROL] * len(
        SPECIAL_TOKENS
    )
    n_vocab = len(tokens)
    n_head = 4
    n_ff = 3 * n_embd
    rng = np.random.default_rng(seed)

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(f"stampede-tiny-llama-seed{seed}")
    writer.add_context_length(8192)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layers)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head)
    writer.add_rope_dimension_count(n_embd // n_head)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tokens.index("<|endoftext|>"))
    writer.add_eos_token_id(tokens.index("<|im_end|>"))
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHATML_TEMPLATE)

    def matrix(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * 0.02).astype(np.float16)

    ones = np.ones(n_embd, dtype=np.float32)
    writer.add_tensor("token_embd.weight", matrix(n_vocab, n_embd))
    for i in range(n_layers):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", ones)
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"blk.{i}.{name}.weight", matrix(n_embd, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", ones)
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", matrix(n_ff, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", matrix(n_ff, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", matrix(n_embd, n_ff))
    writer.add_tensor("output_norm.weight", ones)
    writer.add_tensor("output.weight", matrix(n_vocab, n_embd))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="the .gguf file to write")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument("--layers", type=int, default=4, help="transformer blocks")
    parser.add_argument("--embedding", type=int, default=256, help="embedding width (a multiple of 4 heads)")
    parser.add_argument(
        "--merges", type=int, default=256, help="BPE merges learned (the vocab is 256 bytes + merges + 3)"
    )
    parser.add_argument("--hf-tokenizer", type=Path, help="also write the tokenizer as a Hugging Face folder here")
    args = parser.parse_args()
    write_model(args.path, args.seed, args.layers, args.embedding, args.merges)
    if args.hf_tokenizer is not None:
        write_hf_tokenizer(args.hf_tokenizer, args.merges)
    print(args.path)


if __name__ == "__main__":
    main()
