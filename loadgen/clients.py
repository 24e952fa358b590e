"""Runtime clients: send one streaming chat request and time every chunk of the answer.

Bytes are read with geventhttpclient's ``readline``, which returns as soon as a line is in its
buffer and otherwise reads whatever the socket has (not a full block). Requests go through a
:class:`~loadgen.rxstamps.StampedHTTPClient`, so a line is timed by the read that completed it: the
kernel's receive stamp of that read (when its bytes reached the host, however late the loop got to
them), else the time that read returned; over ``https://``, whose reads OpenSSL makes itself, the
time ``readline`` returned. An output whose read may have taken bytes that arrived after it is
listed in ``late_chunks``, its time an upper bound (see :mod:`loadgen.rxstamps`): a later output came
in the same read, or an SSE comment (a keep-alive), or the read ended inside a line. Other lines
with no text (a role or a finish reason, usage, ``[DONE]``, Ollama's final object) are taken to come
with the token they follow, as runtimes send them. Reads through
:class:`~loadgen.rxstamps.StampedSocket` are checked (not ``https://``, whose every chunk is timed at
its read). A request that meets a keep-alive connection the server had already closed is sent again
on a new one, and counted (:func:`_post`). Nothing parses into models or blocks the gevent loop. Raw
measurements only: the record's derived values (TTFT, ITL, TPOT) are computed in
:mod:`stampede.metrics`.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import gevent
import orjson
from geventhttpclient.response import HTTPConnectionClosed, HTTPParseError

from loadgen.backoff import parse_retry_after
from loadgen.parsers import (
    MAX_LINE_BYTES,
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
from loadgen.rxstamps import ReadStamps, StampedHTTPClient, chunk_time_ns, send_time_ns
from stampede.records import Api, Outcome

ERROR_BODY_BYTES = 300
YIELD_EVERY_NS = 5_000_000
"""How long a stream may be read without letting other greenlets run (a decode step is 10 ms and more)."""


class ChatApi(ABC):
    """How one API asks for a streamed chat completion."""

    api: Api
    path: str

    @abstractmethod
    def body(
        self, model: str, messages: tuple[dict[str, str], ...], max_tokens: int, ignore_eos: bool = False
    ) -> dict[str, Any]: ...

    @abstractmethod
    def parser(self) -> StreamParser: ...


class OllamaChat(ChatApi):
    """Ollama's native ``/api/chat``."""

    api = Api.OLLAMA_CHAT
    path = "/api/chat"

    def body(
        self, model: str, messages: tuple[dict[str, str], ...], max_tokens: int, ignore_eos: bool = False
    ) -> dict[str, Any]:
        # Ollama has no ignore_eos: num_predict caps the output and is all it offers.
        return {"model": model, "messages": messages, "stream": True, "options": {"num_predict": max_tokens}}

    def parser(self) -> StreamParser:
        return OllamaParser()


class OpenAIChat(ChatApi):
    """The OpenAI API's ``/v1/chat/completions`` (vLLM, llama.cpp, SGLang, TGI, gateways)."""

    api = Api.OPENAI_CHAT
    path = "/v1/chat/completions"

    def body(
        self, model: str, messages: tuple[dict[str, str], ...], max_tokens: int, ignore_eos: bool = False
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": max_tokens,
        }
        if ignore_eos:
            body["ignore_eos"] = True  # vLLM and llama.cpp extension; other servers ignore or refuse it
        return body

    def parser(self) -> StreamParser:
        return OpenAIParser()


APIS: dict[Api, ChatApi] = {a.api: a for a in (OllamaChat(), OpenAIChat())}


@dataclass
class Measurement:
    """What the client saw of one request, before it becomes a record."""

    outcome: Outcome = Outcome.OK
    http_status: int | None = None
    server_request_id: str | None = None
    error: str | None = None
    chunk_offsets_ns: list[int] = field(default_factory=list)
    late_chunks: list[int] = field(default_factory=list)
    end_offset_ns: int = 0
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    server_timings_ms: dict[str, float] = field(default_factory=dict)
    chunk_texts: list[str] = field(default_factory=list)
    response_bytes: int = 0
    retry_after_s: float | None = None
    called_ns: int = 0
    """When the caller asked for the request (``perf_counter_ns``)."""
    send_offset_ns: int = 0
    """From ``called_ns`` to the send every offset counts from: the write on a pooled connection, the
    resend after a reconnect, else the call itself (a new connection's connect counts)."""
    reconnects: int = 0
    """Times the request was sent again because a reused connection had been closed (0 or 1)."""

    def fail(self, outcome: Outcome, error: str) -> None:
        self.outcome = outcome
        self.error = error[:500]


def _late(m: Measurement, index: int) -> None:
    if not m.late_chunks or m.late_chunks[-1] != index:
        m.late_chunks.append(index)


def _read_stream(response: Any, parser: StreamParser, start_ns: int, m: Measurement, stamps: ReadStamps) -> None:
    end: StreamEnd | None = None
    server_error = None
    offset_ns = 0
    # The read that completed the headers may have taken body lines too: none is its first line.
    last_read_ns = stamps.read_ns
    output_read_ns = -1  # the read that completed the last output
    yielded_ns = time.perf_counter_ns()
    while True:
        line = _readline(response, MAX_LINE_BYTES)
        now_ns = time.perf_counter_ns()
        if now_ns - yielded_ns > YIELD_EVERY_NS:
            # Lines already waiting are read without blocking: a server sending faster than this
            # parses would otherwise hold the loop, every other user and the request's own timeout.
            gevent.idle()
            yielded_ns = time.perf_counter_ns()
        if not line:
            break
        # readline reads only while no whole line is buffered, so the last read completed this line;
        # the first line a read completes ended in the oldest segment that read took.
        first_line, last_read_ns = stamps.read_ns != last_read_ns, stamps.read_ns
        line_ns = chunk_time_ns(stamps, start_ns, now_ns, oldest=first_line)
        # A read without a stamp is timed late, so the next read's stamp may be earlier: never go back.
        offset_ns = max(offset_ns, line_ns - start_ns)
        m.response_bytes += len(line)
        # The stamped read that completed this line, if any.
        read_ns = stamps.read_ns if stamps.read_ns >= start_ns else None
        if read_ns is not None and read_ns == output_read_ns and line[:1] == b":":
            _late(m, len(m.chunk_offsets_ns) - 1)  # a keep-alive came in the read that brought the last output
        for event in parser.feed(line, offset_ns):
            if isinstance(event, OutputChunk):
                if read_ns is not None:
                    if read_ns == output_read_ns:  # the read that brought this also brought the last
                        _late(m, len(m.chunk_offsets_ns) - 1)
                    if not stamps.ends_line:  # it also took part of a line still to come
                        _late(m, len(m.chunk_offsets_ns))
                    output_read_ns = read_ns
                m.chunk_offsets_ns.append(event.offset_ns)
                m.chunk_texts.append(event.text)
            elif isinstance(event, TokenCounts):
                m.prompt_tokens, m.output_tokens = event.prompt_tokens, event.output_tokens
            elif isinstance(event, ServerTimings):
                m.server_timings_ms.update(event.timings_ms)
            elif isinstance(event, StreamEnd):
                end = event
            elif isinstance(event, ServerError):
                server_error = event.message
    # The response ends with its last line: timed like a chunk, so E2E and TPOT use one clock.
    m.end_offset_ns = offset_ns
    if server_error is not None:
        m.fail(Outcome.TRUNCATED, f"server error in stream: {server_error}")
    elif end is None:
        m.fail(Outcome.TRUNCATED, "stream ended before its final message")
    elif not end.finished:
        m.fail(Outcome.ABORTED, "the server ended the stream before the request finished (no finish_reason, no usage)")


def _readline(response: Any, limit: int) -> bytes:
    """geventhttpclient's ``readline(b"\\n")``, with a cap: a line longer than ``limit`` is an InvalidStream.

    Its own has no limit and searches the whole buffer again after every read, so a body without
    newlines was held, and scanned over and over, until the request timed out. This one remembers how
    far it searched. It works on the same response internals as geventhttpclient's own method.
    """
    buffer = response._body_buffer
    searched = 0
    while True:
        end = buffer.find(b"\n", searched)
        if end >= 0:
            line = bytes(buffer[: end + 1])
            del buffer[: end + 1]
            return line
        searched = len(buffer)
        if searched > limit:
            raise InvalidStream(
                f"a line longer than {limit} bytes (a stream's lines are short): {bytes(buffer[:80])!r}..."
            )
        if response.message_complete:
            return b""
        sock = response._sock
        if sock is None:
            raise HTTPConnectionClosed("connection closed.")
        try:
            response.feed(sock.recv(response.block_size))
        except BaseException:
            response.release()
            raise


def _post(http: StampedHTTPClient, api: ChatApi, body: bytes, headers: dict[str, str], m: Measurement) -> Any:
    """Send the request; once more on a new connection when a reused one turns out to be closed.

    Servers close idle keep-alive connections (uvicorn after 5 s), and some close every connection
    after a streamed response without saying so (llama.cpp's server). The close can reach us just
    after the pool found the connection idle and open, so the request meets a socket the server had
    already left: EOF or a reset on the write or before the status line, with no byte of a response.
    The server never read that request, so it is sent again, once, on a new connection, as HTTP
    clients do with a stale pooled connection, and counted in ``reconnects``. The same failure on a
    connection opened for this request is the server's own, and is not retried.
    """
    connects, received = http.connects, http.stamps.received_bytes
    try:
        return http.request("POST", api.path, body=body, headers=headers)
    except (HTTPConnectionClosed, ConnectionResetError, BrokenPipeError):
        # A reset can also end a response under way: sent again only where not one byte of it came.
        if http.connects != connects or http.stamps.received_bytes != received:
            raise
    m.reconnects += 1
    m.send_offset_ns = time.perf_counter_ns() - m.called_ns  # timed from the resend, its connect included
    return http.request("POST", api.path, body=body, headers=headers)


def send_chat(
    http: StampedHTTPClient,
    api: ChatApi,
    body: bytes,
    headers: dict[str, str],
    timeout_s: float,
    m: Measurement | None = None,
) -> Measurement:
    """Send one streaming chat request and measure it; never raises for a failed request.

    The caller must discard ``http`` when the outcome is not OK: its connection may be mid-stream.
    A caller's ``m`` is filled in as the answer comes, so what arrived survives the caller being killed.
    """
    m = m if m is not None else Measurement()
    m.called_ns = time.perf_counter_ns()
    stamps = http.stamps
    response = None
    received_before = stamps.received_bytes
    try:
        with gevent.Timeout(timeout_s):
            response = _post(http, api, body, headers, m)
            # TTFT starts as the request goes out, not as the client builds it.
            m.send_offset_ns = send_time_ns(stamps, m.called_ns + m.send_offset_ns) - m.called_ns
            m.http_status = response.status_code
            request_id = response.get("x-request-id")
            m.server_request_id = request_id if isinstance(request_id, str) else None
            if m.http_status != 200:
                retry_after = response.get("retry-after")
                m.retry_after_s = parse_retry_after(retry_after if isinstance(retry_after, str) else None)
                text = response.read(ERROR_BODY_BYTES)
                m.response_bytes = len(text)
                m.fail(Outcome.HTTP_ERROR, f"HTTP {m.http_status}: {text.decode(errors='replace').strip()}")
            else:
                _read_stream(response, api.parser(), m.called_ns + m.send_offset_ns, m, stamps)
    except gevent.Timeout:
        m.fail(Outcome.TIMEOUT, f"no complete response within {timeout_s:g} s")
    except TimeoutError:
        m.fail(Outcome.TIMEOUT, "network timeout: the server sent nothing for too long")
    except InvalidStream as exc:
        m.fail(Outcome.INVALID_STREAM, str(exc))
    except (HTTPParseError, HTTPConnectionClosed, OSError) as exc:
        responded = response is not None or stamps.received_bytes > received_before
        outcome = Outcome.TRUNCATED if responded else Outcome.CONNECTION_ERROR
        m.fail(outcome, f"{type(exc).__name__}: {exc}".rstrip(": "))
    if m.end_offset_ns == 0:  # no line came (an error, or an empty body): the end is now
        m.end_offset_ns = time.perf_counter_ns() - m.called_ns - m.send_offset_ns
    return m


def encode_body(body: dict[str, Any]) -> bytes:
    """The JSON bytes of a request body."""
    return orjson.dumps(body)
