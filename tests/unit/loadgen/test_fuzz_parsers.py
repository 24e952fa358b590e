"""The stream parsers fuzzed: random bytes, random slicings of valid streams, huge lines, invalid UTF-8,
keep-alive comments. Nothing but InvalidStream may escape, and no slicing may change what comes out.

Hypothesis runs derandomized and without its example database, so a failure reproduces on every run
and the tests leave no files behind.
"""

import tracemalloc

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadgen.parsers import (
    MAX_LINE_BYTES,
    MAX_TOKEN_COUNT,
    Event,
    InvalidStream,
    OllamaParser,
    OpenAIParser,
    OutputChunk,
    ServerError,
    ServerTimings,
    StreamEnd,
    StreamParser,
    TokenCounts,
)

FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=150)
PARSERS = [OllamaParser, OpenAIParser]
# Small enough for hypothesis to reach, so the cap's own logic is fuzzed too; the real cap is tested below.
SMALL_CAP_BYTES = 200

tokens = st.lists(st.text(min_size=1, max_size=12), max_size=12)


def ollama_stream(texts: list[str], keep_alives: list[bool], crlf: bool) -> bytes:
    """NDJSON as Ollama sends it; a keep-alive here is a blank line (NDJSON has no comments)."""
    end = b"\r\n" if crlf else b"\n"
    lines = [orjson.dumps({"message": {"role": "assistant", "content": t}, "done": False}) for t in texts]
    lines.append(orjson.dumps({"message": {"content": ""}, "done": True, "prompt_eval_count": 7,
                               "eval_count": len(texts), "eval_duration": 5_000_000}))  # fmt: skip
    return _interleave(lines, keep_alives, end, end)


def openai_stream(texts: list[str], keep_alives: list[bool], crlf: bool) -> bytes:
    """Server-sent events as vLLM sends them, with ``: keep-alive`` comments where asked."""
    end = b"\r\n" if crlf else b"\n"
    events = [b"data: " + orjson.dumps({"choices": [{"delta": {"content": t}}]}) for t in texts]
    events.append(b"data: " + orjson.dumps({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}}))
    events.append(b"data: [DONE]")
    return _interleave(events, keep_alives, end * 2, b": keep-alive" + end * 2)


def _interleave(lines: list[bytes], keep_alives: list[bool], end: bytes, keep_alive: bytes) -> bytes:
    body = b""
    for i, line in enumerate(lines):
        if i < len(keep_alives) and keep_alives[i]:
            body += keep_alive
        body += line + end
    return body


STREAMS = {OllamaParser: ollama_stream, OpenAIParser: openai_stream}


def slices(body: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(body) + 1) for c in cuts})
    return [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]


def parse(parser: StreamParser, pieces: list[bytes]) -> tuple[list[Event], str | None]:
    """Every event the pieces give, all fed at offset 0, and the InvalidStream message if one ended it."""
    events: list[Event] = []
    try:
        for piece in pieces:
            events += parser.feed(piece, 0)
    except InvalidStream as exc:
        return events + exc.events, str(exc)
    return events, None


def assert_storable(events: list[Event]) -> None:
    """What a parser lets through is what a record can hold."""
    for event in events:
        if isinstance(event, OutputChunk):
            assert isinstance(event.text, str) and event.text
        elif isinstance(event, TokenCounts):
            for count in (event.prompt_tokens, event.output_tokens):
                assert count is None or (type(count) is int and 0 <= count <= MAX_TOKEN_COUNT)
        elif isinstance(event, ServerTimings):
            assert all(isinstance(v, float) and 0 <= v < float("inf") for v in event.timings_ms.values())
        elif isinstance(event, ServerError):
            assert isinstance(event.message, str)
        else:
            assert isinstance(event, StreamEnd)


@pytest.mark.parametrize("parser_class", PARSERS)
@FUZZ
@given(
    texts=tokens,
    keep_alives=st.lists(st.booleans(), max_size=14),
    crlf=st.booleans(),
    cuts=st.lists(st.integers(min_value=0), max_size=30),
)
def test_any_slicing_of_a_valid_stream_gives_its_events(parser_class, texts, keep_alives, crlf, cuts) -> None:
    body = STREAMS[parser_class](texts, keep_alives, crlf)
    whole, whole_error = parse(parser_class(), [body])
    parser = parser_class()
    sliced, sliced_error = parse(parser, slices(body, cuts))
    assert whole_error is None and sliced_error is None
    assert sliced == whole
    assert [e.text for e in sliced if isinstance(e, OutputChunk)] == texts
    assert isinstance(sliced[-1], StreamEnd)
    assert parser.pending == b""


@pytest.mark.parametrize("parser_class", PARSERS)
def test_a_chunk_is_timed_by_the_piece_that_completed_its_line(parser_class) -> None:
    body = STREAMS[parser_class](["a", "b"], [], False)
    first_end = body.index(b"\n") + 1
    parser = parser_class()
    events = parser.feed(body[: first_end - 1], 1) + parser.feed(body[first_end - 1 : first_end + 3], 2)
    events += parser.feed(body[first_end + 3 :], 3)
    assert [e.offset_ns for e in events if isinstance(e, OutputChunk)] == [2, 3]


# Bytes that make parsers take their less travelled paths, mixed with arbitrary ones.
FRAGMENTS = [b"\n", b"\r\n", b"\n\n", b"data: ", b"data:", b": keep-alive\n\n", b"event: x\n", b"{", b"}",
             b"[DONE]", b'{"choices":[', b'{"delta":{"content":', b'"text"', b'"usage":', b'"done":true',
             b'"error":', b'"message":{"content":', b'"timings":{"prompt_ms":', b"\xff", b"\xc3", b"\xed\xa0\x80",
             b'"\\ud800"', b"null", b"-1", b"1e400", b"[" * 1100, b"\x00", b" " * 300]  # fmt: skip
junk = st.lists(st.sampled_from(FRAGMENTS) | st.binary(max_size=40), max_size=40).map(b"".join)


@pytest.mark.parametrize("parser_class", PARSERS)
@FUZZ
@given(body=junk, cuts=st.lists(st.integers(min_value=0), max_size=20))
def test_arbitrary_bytes_give_storable_events_or_invalid_stream_however_sliced(parser_class, body, cuts) -> None:
    whole = parse(parser_class(SMALL_CAP_BYTES), [body])
    sliced = parse(parser_class(SMALL_CAP_BYTES), slices(body, cuts))
    assert sliced == whole
    assert_storable(sliced[0])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1) | st.floats(allow_nan=False,
    allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)  # fmt: skip


@FUZZ
@given(content=json_values, usage=json_values, timings=json_values, choices=json_values, error=json_values)
def test_openai_messages_of_any_shape_give_storable_events_or_invalid_stream(
    content, usage, timings, choices, error
) -> None:
    messages = [
        {"choices": [{"delta": {"content": content}}], "usage": usage, "timings": timings},
        {"choices": choices},
        {"error": error},
    ]
    body = b"".join(b"data: " + orjson.dumps(m) + b"\n\n" for m in messages)
    events, _ = parse(OpenAIParser(), [body])
    assert_storable(events)


@FUZZ
@given(message=json_values, done=json_values, count=json_values, duration=json_values, error=json_values)
def test_ollama_messages_of_any_shape_give_storable_events_or_invalid_stream(
    message, done, count, duration, error
) -> None:
    lines = [
        {"message": message, "done": False},
        {"message": {"content": message}, "done": done, "eval_count": count, "total_duration": duration},
        {"error": error},
    ]
    events, _ = parse(OllamaParser(), [b"".join(orjson.dumps(line) + b"\n" for line in lines)])
    assert_storable(events)


@pytest.mark.parametrize("parser_class", PARSERS)
def test_invalid_utf8_in_a_message_is_an_invalid_stream(parser_class) -> None:
    body = STREAMS[parser_class](["\u00e9"], [], False).replace("\u00e9".encode(), b"\xc3", 1)
    with pytest.raises(InvalidStream, match="not JSON"):
        parser_class().feed(body, 1)


def test_invalid_utf8_in_a_comment_is_ignored() -> None:
    assert OpenAIParser().feed(b": \xff\xfe keep-alive\n\n", 1) == []


@pytest.mark.parametrize("parser_class", PARSERS)
def test_events_before_a_bad_line_travel_with_its_error(parser_class) -> None:
    body = STREAMS[parser_class](["a", "b"], [], False)
    bad = body.index(b"\n") + 1  # the second line becomes garbage
    with pytest.raises(InvalidStream) as raised:
        parser_class().feed(body[:bad] + b"garbage\n" + body[bad:], 1)
    assert raised.value.events == [OutputChunk(1, "a")]


@pytest.mark.parametrize("parser_class", PARSERS)
def test_a_100_mb_line_without_newline_is_refused_at_the_cap_in_bounded_memory(parser_class) -> None:
    piece_bytes = 64 * 1024
    parser = parser_class()
    fed_bytes = 0
    tracemalloc.start()
    try:
        with pytest.raises(InvalidStream, match=f"a line longer than {MAX_LINE_BYTES} bytes"):
            while fed_bytes < 100 * 1024 * 1024:
                parser.feed(b"x" * piece_bytes, 1)  # a new object each time, as reads make them
                fed_bytes += piece_bytes
        peak_bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert fed_bytes == MAX_LINE_BYTES  # refused by the piece that went past the cap
    assert peak_bytes < 3 * MAX_LINE_BYTES  # the line held once, and joined once for the message


@pytest.mark.parametrize("parser_class", PARSERS)
def test_a_line_over_the_cap_is_refused_even_with_its_newline(parser_class) -> None:
    with pytest.raises(InvalidStream, match="a line longer than"):
        parser_class().feed(b"x" * (MAX_LINE_BYTES + 1) + b"\n", 1)


@pytest.mark.parametrize("parser_class", PARSERS)
def test_a_long_valid_line_under_the_cap_is_parsed(parser_class) -> None:
    text = "y" * (MAX_LINE_BYTES - 100)
    body = STREAMS[parser_class]([text], [], False)
    parser = parser_class()
    events = [e for i in range(0, len(body), 4096) for e in parser.feed(body[i : i + 4096], 1)]
    assert events[0] == OutputChunk(1, text)
