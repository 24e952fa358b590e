"""Write a tiny random-weight Llama in HuggingFace format, for tests and benchmarks against a real vLLM.

Usage: ``python scripts/make_tiny_hf_llama.py OUT_DIR`` with ``transformers``, ``torch`` and ``tokenizers``
installed (the vLLM venv has them). Nothing is downloaded: the weights are random (seeded), and the
tokenizer is a byte-level BPE trained here on a few lines of text, so any prompt tokenizes (bytes at
worst) and every output detokenizes. It carries a chat template, which vLLM's chat API needs.
Its output is noise: it exists to be timed, not read.
"""

from __future__ import annotations

import argparse
from pathlib import Path

# A few lines of plain English: enough merges that common words take a token or two.
CORPUS = """
The time of the day was long and the people were in the city for the work of the year. It is said that
there was a man who had a house by the river, and he would go to the market with his children on the
first day of every month. They made bread and sold it at a good price, and the world was kind to them.
Some of the most important things in life are not what we think: water, light, friends, a place to sleep.
When the sky is blue and the sun is high, the sea looks like glass. Why is the sky blue? Because the air
scatters blue light more than red light. Write a story about a city, a river, a house and a long night.
A number of new ideas came from the school, and the state made them part of its plan for the future.
"""
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def make_tokenizer(out_dir: Path, vocab_size: int) -> int:
    """Save the tokenizer; returns its vocabulary size, special tokens included."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([" ".join(CORPUS.split())] * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        chat_template=CHAT_TEMPLATE,
        model_max_length=2048,
    )
    fast.save_pretrained(out_dir)
    return len(fast)


def make_model(out_dir: Path, vocab_size: int, seed: int) -> int:
    """Save the random-weight model; returns its parameter count."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,  # head size 32, which vLLM's CPU attention supports
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
        torch_dtype="bfloat16",
    )
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out_dir, safe_serialization=True)
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    # The corpus is small: the trainer stops short of the asked-for size, at about 500 tokens.
    vocab = make_tokenizer(args.out_dir, vocab_size=1024)
    # The model's vocabulary covers every id the tokenizer can give, special tokens included.
    parameters = make_model(args.out_dir, vocab, args.seed)
    print(f"wrote a {parameters / 1e6:.1f} M-parameter Llama and a {vocab}-token tokenizer to {args.out_dir}")


if __name__ == "__main__":
    main()
