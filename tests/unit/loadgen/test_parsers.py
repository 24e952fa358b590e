"""Stream parsers on plain bytes: any slicing of the body gives the same events."""

import orjson
import pytest

from loadgen.parsers import (
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


def ollama_body(tokens: list[str]) -> bytes:
    lines = [{"model": "m", "message": {"role": "assistant", "content": t}, "done": False} for t in tokens]
    lines.append({"model": "m", "message": {"role": "assistant", "content": ""}, "done": True,
                  "prompt_eval_count": 12, "eval_count": len(tokens)})  # fmt: skip
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


def openai_body(tokens: list[str]) -> bytes:
    chunks = [{"choices": [{"index": 0, "delta": {"role": "assistant"}}]}]
    chunks += [{"choices": [{"index": 0, "delta": {"content": t}}]} for t in tokens]
    chunks.append({"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": len(tokens)}})
    return b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


def feed_in_pieces(parser: StreamParser, body: bytes, size: int) -> list[object]:
    events: list[object] = []
    for n, start in enumerate(range(0, len(body), size)):
        events += parser.feed(body[start : start + size], offset_ns=n)
    return events


@pytest.mark.parametrize("size", [1, 7, 64, 100_000])
@pytest.mark.parametrize(("parser_class", "body_of"), [(OllamaParser, ollama_body), (OpenAIParser, openai_body)])
def test_events_do_not_depend_on_how_the_body_is_sliced(parser_class, body_of, size) -> None:
    events = feed_in_pieces(parser_class(), body_of(["Hel", "lo", " 世界"]), size)
    assert sum(isinstance(e, OutputChunk) for e in events) == 3
    assert TokenCounts(12, 3) in events
    assert isinstance(events[-1], StreamEnd)


@pytest.mark.parametrize(
    ("last", "finished"),
    [
        (b'data: {"choices": [{"delta": {}, "finish_reason": "stop"}]}\n', True),
        (b'data: {"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 1}}\n', True),
        (b'data: {"choices": [{"delta": {"content": "b"}, "finish_reason": null}]}\n', False),
    ],
)
def test_done_says_whether_the_request_finished_before_it(last: bytes, finished: bool) -> None:
    parser = OpenAIParser()
    events = parser.feed(b'data: {"choices": [{"delta": {"content": "a"}}]}\n' + last + b"data: [DONE]\n", 1)
    assert events[-1] == StreamEnd(finished)


def test_chunks_carry_the_offset_of_the_bytes_that_completed_them() -> None:
    parser = OpenAIParser()
    assert parser.feed(b'data: {"choices":[{"delta":{"content":"a"}}]}', 5) == []
    assert parser.feed(b"\n\n", 9) == [OutputChunk(9, "a")]


def test_role_only_and_empty_deltas_are_not_output() -> None:
    body = b'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}\n\n'
    assert OpenAIParser().feed(body, 1) == []


def test_reasoning_content_counts_as_output() -> None:
    body = b'data: {"choices":[{"delta":{"reasoning_content":"hmm"}}]}\n\n'
    assert OpenAIParser().feed(body, 1) == [OutputChunk(1, "hmm")]


def test_sse_comments_are_ignored_and_unknown_lines_are_invalid() -> None:
    assert OpenAIParser().feed(b": keep-alive\n\n", 1) == []
    with pytest.raises(InvalidStream):
        OpenAIParser().feed(b"garbage\n", 1)


@pytest.mark.parametrize("parser_class", [OllamaParser, OpenAIParser])
def test_malformed_json_is_an_invalid_stream(parser_class) -> None:
    line = b'data: {"choices": [\n' if parser_class is OpenAIParser else b'{"message": \n'
    with pytest.raises(InvalidStream):
        parser_class().feed(line, 1)


@pytest.mark.parametrize("count", [2**31, -1, 12.5, "12", True])
def test_a_count_no_store_could_hold_is_an_invalid_stream(count: object) -> None:
    openai = b'data: {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": %s}}\n' % orjson.dumps(count)
    with pytest.raises(InvalidStream, match="usage output count is not a token count"):
        OpenAIParser().feed(openai, 1)
    ollama = orjson.dumps({"message": {"content": ""}, "done": True, "prompt_eval_count": count, "eval_count": 1})
    with pytest.raises(InvalidStream, match="Ollama's prompt count is not a token count"):
        OllamaParser().feed(ollama + b"\n", 1)


@pytest.mark.parametrize(
    ("parser_class", "line"),
    [
        (OpenAIParser, b'data: {"choices": [], "usage": [1, 2]}'),
        (OpenAIParser, b'data: {"choices": ["a"]}'),
        (OpenAIParser, b'data: {"choices": [], "timings": "prompt_ms"}'),
        (OllamaParser, b'{"message": "hi", "done": false}'),
        (OllamaParser, b'{"message": ["hi"], "done": false}'),
    ],
)
def test_json_of_an_unexpected_shape_is_an_invalid_stream(parser_class, line: bytes) -> None:
    with pytest.raises(InvalidStream, match="unexpected message"):
        parser_class().feed(line + b"\n", 1)


@pytest.mark.parametrize("duration", ["12.5", -1, None, True, [1]])
def test_a_duration_no_clock_gives_is_an_invalid_stream(duration: object) -> None:
    llamacpp = b'data: {"choices": [], "timings": {"prompt_ms": %s}}\n' % orjson.dumps(duration)
    with pytest.raises(InvalidStream, match="prompt_ms is not a duration"):
        OpenAIParser().feed(llamacpp, 1)
    ollama = orjson.dumps(
        {"message": {}, "done": True, "prompt_eval_count": 1, "eval_count": 1, "eval_duration": duration}
    )
    with pytest.raises(InvalidStream, match="eval_duration is not a duration"):
        OllamaParser().feed(ollama + b"\n", 1)


@pytest.mark.parametrize("text", [5, ["a"], {"text": "a"}])
def test_output_text_that_is_not_a_string_is_an_invalid_stream(text: object) -> None:
    openai = b'data: {"choices": [{"delta": {"content": %s}}]}\n' % orjson.dumps(text)
    with pytest.raises(InvalidStream, match="output text is not a string"):
        OpenAIParser().feed(openai, 1)
    ollama = orjson.dumps({"message": {"content": text}, "done": False})
    with pytest.raises(InvalidStream, match="output text is not a string"):
        OllamaParser().feed(ollama + b"\n", 1)


def test_errors_sent_inside_the_stream_are_reported() -> None:
    assert OllamaParser().feed(b'{"error":"model unloaded"}\n', 1) == [ServerError("model unloaded")]
    sse = b'data: {"error":{"message":"overloaded","code":503}}\n\n'
    assert OpenAIParser().feed(sse, 1) == [ServerError("overloaded")]


def test_a_cut_last_line_stays_pending() -> None:
    parser = OllamaParser()
    parser.feed(b'{"message":{"content":"a"},"done":false}\n{"done":tr', 1)
    assert parser.pending == b'{"done":tr'


def test_ollama_durations_become_server_timings_in_ms() -> None:
    final = {
        "done": True,
        "prompt_eval_count": 4,
        "eval_count": 2,
        "load_duration": 2_500_000_000,
        "prompt_eval_duration": 30_000_000,
        "eval_duration": 200_000_000,
        "total_duration": 2_740_000_000,
    }
    events = OllamaParser().feed(orjson.dumps(final) + b"\n", 1)
    assert ServerTimings({"load_ms": 2500.0, "prompt_eval_ms": 30.0, "eval_ms": 200.0, "total_ms": 2740.0}) in events


def test_llamacpp_timings_block_becomes_server_timings() -> None:
    chunk = {"choices": [], "timings": {"prompt_n": 5, "prompt_ms": 12.5, "predicted_n": 3, "predicted_ms": 40.0}}
    events = OpenAIParser().feed(b"data: " + orjson.dumps(chunk) + b"\n\n", 1)
    assert events == [ServerTimings({"prompt_eval_ms": 12.5, "eval_ms": 40.0})]
