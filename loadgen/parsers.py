"""Stream parsers: bytes and the time they arrived in, events out. No clock, no socket.

Ollama's native API streams NDJSON (one JSON object per line, the last with ``"done": true`` and
the server's counts and timings); the OpenAI API streams server-sent events (``data: {json}``
lines, an optional usage chunk, then ``data: [DONE]``). Both are newline-delimited, so a parser
accepts any slicing of the body and buffers a partial line until its newline arrives: up to
:data:`MAX_LINE_BYTES`, past which the stream is invalid (a body that never sends a newline would
otherwise be held in memory whole).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import orjson


class InvalidStream(ValueError):
    """The body is not the stream format the API promises.

    ``events`` holds what the same ``feed`` call completed before the bad line, so that none is lost
    however the body was sliced.
    """

    def __init__(self, message: str, events: list[Event] | None = None) -> None:
        super().__init__(message)
        self.events: list[Event] = events or []


@dataclass(frozen=True, slots=True)
class OutputChunk:
    """A chunk that carried output text (content or reasoning), arrived ``offset_ns`` after send."""

    offset_ns: int
    text: str


@dataclass(frozen=True, slots=True)
class TokenCounts:
    """Token counts as the server reported them."""

    prompt_tokens: int | None
    output_tokens: int | None

    @classmethod
    def reported(cls, prompt: object, output: object, where: str) -> TokenCounts:
        """Counts from a server's message; raises InvalidStream for one that is not a count."""
        return cls(_count(prompt, f"{where} prompt count"), _count(output, f"{where} output count"))


# The stores keep counts as 32-bit integers; a server claiming more is broken, not busy.
MAX_TOKEN_COUNT = 2**31 - 1


def _count(value: object, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TOKEN_COUNT:
        raise InvalidStream(f"{what} is not a token count: {value!r:.40}")
    return value


@dataclass(frozen=True, slots=True)
class ServerTimings:
    """The server's own account of where the time went, in ms, under canonical names.

    ``load_ms`` (model load), ``prompt_eval_ms`` (prefill), ``eval_ms`` (decode), ``total_ms``
    (the server's whole handling); a runtime reports some or all of them.
    """

    timings_ms: dict[str, float]


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """The server's explicit end of stream (Ollama ``done``, OpenAI ``[DONE]``).

    ``finished`` is False for an OpenAI stream whose ``[DONE]`` came before any choice's
    ``finish_reason`` and any ``usage``: the server stopped the request rather than completing it.
    """

    finished: bool = True


@dataclass(frozen=True, slots=True)
class ServerError:
    """An error object sent inside the stream."""

    message: str


Event = OutputChunk | TokenCounts | ServerTimings | StreamEnd | ServerError


# A chunk's line is a few hundred bytes, a final one with logprobs or timings some KB: a line past this
# is a broken server, and holding more would let one stream take the host's memory.
MAX_LINE_BYTES = 4 * 1024 * 1024


class StreamParser(ABC):
    """Splits a body into lines and turns each line into events.

    Once ``feed`` has raised InvalidStream the parser is spent: the stream is not read further.
    """

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self.max_line_bytes = max_line_bytes
        # The unfinished last line, as the pieces it came in: joined once, when its newline comes
        # (joining at every piece would copy a long line once per piece).
        self._pieces: list[bytes] = []
        self._pending_bytes = 0

    def feed(self, data: bytes, offset_ns: int) -> list[Event]:
        """Parse the bytes that arrived at ``offset_ns``; returns the events they completed."""
        events: list[Event] = []
        last_newline = data.rfind(b"\n")
        if last_newline >= 0:
            complete = b"".join([*self._pieces, data[:last_newline]])
            self._pieces, self._pending_bytes = [], 0
            for line in complete.split(b"\n"):
                self._parse(line, offset_ns, events)
        self._hold(data[last_newline + 1 :], events)
        return events

    @property
    def pending(self) -> bytes:
        """Bytes of an unfinished last line (non-empty at end of body means a cut stream)."""
        return b"".join(self._pieces)

    def _hold(self, piece: bytes, events: list[Event]) -> None:
        if not piece:
            return
        self._pending_bytes += len(piece)
        self._pieces.append(piece)
        if self._pending_bytes > self.max_line_bytes:
            raise InvalidStream(self._too_long(self.pending), events)

    def _parse(self, line: bytes, offset_ns: int, events: list[Event]) -> None:
        if len(line) > self.max_line_bytes:
            raise InvalidStream(self._too_long(line), events)
        line = line.strip()
        if not line:
            return
        before = len(events)
        try:
            self._parse_line(line, offset_ns, events)
        except InvalidStream as exc:
            raise InvalidStream(str(exc), events[:before]) from exc
        except (AttributeError, TypeError, ValueError) as exc:
            # Valid JSON of another shape (a list for an object, text for a number).
            message = f"unexpected message {line[:80]!r}: {type(exc).__name__}: {exc}"
            raise InvalidStream(message, events[:before]) from exc

    def _too_long(self, line: bytes) -> str:
        return f"a line longer than {self.max_line_bytes} bytes (a stream's lines are short): {line[:80]!r}..."

    @abstractmethod
    def _parse_line(self, line: bytes, offset_ns: int, events: list[Event]) -> None: ...


def _json(line: bytes) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise InvalidStream(f"not JSON: {line[:80]!r}") from exc


def _text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise InvalidStream(f"output text is not a string: {value!r:.40}")


def _ms(value: object, key: str) -> float:
    """A duration as the server sent it; a duration no clock gives (negative, not a number) is an invalid stream."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise InvalidStream(f"{key} is not a duration: {value!r:.40}")
    return float(value)


def _error_message(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message", error))
    return str(error)


# Ollama's final object: durations in ns under these names.
OLLAMA_DURATIONS = {
    "load_duration": "load_ms",
    "prompt_eval_duration": "prompt_eval_ms",
    "eval_duration": "eval_ms",
    "total_duration": "total_ms",
}
# llama.cpp's ``timings`` block: durations already in ms.
LLAMACPP_TIMINGS = {"prompt_ms": "prompt_eval_ms", "predicted_ms": "eval_ms"}


class OllamaParser(StreamParser):
    """Ollama ``/api/chat`` NDJSON."""

    def _parse_line(self, line: bytes, offset_ns: int, events: list[Event]) -> None:
        obj = _json(line)
        if not isinstance(obj, dict):
            raise InvalidStream(f"expected a JSON object: {line[:80]!r}")
        if "error" in obj:
            events.append(ServerError(_error_message(obj["error"])))
            return
        message = obj.get("message") or {}
        text = _text(message.get("content")) or _text(message.get("thinking"))
        if text:
            events.append(OutputChunk(offset_ns, text))
        if obj.get("done"):
            events.append(TokenCounts.reported(obj.get("prompt_eval_count"), obj.get("eval_count"), "Ollama's"))
            timings = {name: _ms(obj[key], key) / 1e6 for key, name in OLLAMA_DURATIONS.items() if key in obj}
            if timings:
                events.append(ServerTimings(timings))
            events.append(StreamEnd())


class OpenAIParser(StreamParser):
    """OpenAI ``/v1/chat/completions`` server-sent events."""

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        super().__init__(max_line_bytes)
        # A completed request has a choice with a finish_reason or a usage chunk (sent after the last token).
        self._finished = False

    def _parse_line(self, line: bytes, offset_ns: int, events: list[Event]) -> None:
        if not line.startswith(b"data:"):
            if line.startswith((b":", b"event:", b"id:", b"retry:")):
                return  # SSE comments and fields that carry no payload
            raise InvalidStream(f"not a server-sent event: {line[:80]!r}")
        payload = line[5:].strip()
        if payload == b"[DONE]":
            events.append(StreamEnd(self._finished))
            return
        obj = _json(payload)
        if not isinstance(obj, dict):
            raise InvalidStream(f"expected a JSON object: {payload[:80]!r}")
        if "error" in obj:
            events.append(ServerError(_error_message(obj["error"])))
            return
        for choice in obj.get("choices") or ():
            self._finished = self._finished or choice.get("finish_reason") is not None
            delta = choice.get("delta") or {}
            text = _text(delta.get("content")) or _text(delta.get("reasoning_content")) or _text(delta.get("reasoning"))
            if text:
                events.append(OutputChunk(offset_ns, text))
                break
        usage = obj.get("usage")
        if usage:
            self._finished = True
            events.append(TokenCounts.reported(usage.get("prompt_tokens"), usage.get("completion_tokens"), "usage"))
        timings = obj.get("timings")
        if timings:
            found = {name: _ms(timings[key], key) for key, name in LLAMACPP_TIMINGS.items() if key in timings}
            if found:
                events.append(ServerTimings(found))
