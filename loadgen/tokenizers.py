"""Client-side token counting, with a tokenizer the user names and has installed locally.

``--tokenizer PATH`` loads a HuggingFace ``tokenizer.json`` (or a folder holding one) with the
``tokenizers`` library; ``--tokenizer tiktoken:NAME`` uses a tiktoken encoding from its local cache.
Counting happens after a request ends, never while its chunks are being timed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class TokenCounter(Protocol):
    def count(self, text: str) -> int: ...


class _HuggingFace:
    def __init__(self, path: Path) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise ValueError("--tokenizer PATH needs the `tokenizers` package: pip install tokenizers") from None
        file = path / "tokenizer.json" if path.is_dir() else path
        if not file.is_file():
            raise ValueError(f"--tokenizer: no tokenizer.json at {path}")
        self._tokenizer = Tokenizer.from_file(str(file))

    def count(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)


class _Tiktoken:
    def __init__(self, name: str) -> None:
        try:
            import tiktoken
        except ImportError:
            raise ValueError("--tokenizer tiktoken:NAME needs the `tiktoken` package: pip install tiktoken") from None
        try:
            self._encoding = tiktoken.get_encoding(name)
        except Exception as exc:  # unknown name, or its files are neither cached nor downloadable
            raise ValueError(f"--tokenizer: tiktoken encoding {name!r} is not available locally ({exc})") from None

    def count(self, text: str) -> int:
        return len(self._encoding.encode(text, disallowed_special=()))


def load_tokenizer(spec: str) -> TokenCounter:
    """The token counter named by ``spec``; ValueError with the reason when it cannot be loaded."""
    if spec.startswith("tiktoken:"):
        return _Tiktoken(spec.removeprefix("tiktoken:"))
    return _HuggingFace(Path(spec))
