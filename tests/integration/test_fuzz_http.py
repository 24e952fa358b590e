"""The HTTP reader fuzzed end to end: ``send_chat`` through a ``StampedHTTPClient`` against a raw-socket
server that sends scripted bytes (valid streams split at random points, garbage, cuts, broken chunked
encoding, headers only, and servers that send forever).

Every request must become one Measurement with an outcome that a record can hold, within the request
timeout, never an exception; memory must stay bounded. Cases come from seeded generators: a failure
names its case and seed, and reproduces.
"""

import random
import socket
import socketserver
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import gevent
import orjson
import pytest

from loadgen.clients import APIS, ChatApi, Measurement, encode_body, send_chat
from loadgen.parsers import MAX_LINE_BYTES
from loadgen.rxstamps import StampedHTTPClient
from stampede.records import Api, Outcome
from stampede.rows import encode_request
from tests.builders import request_record

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

REQUEST_TIMEOUT_S = 2.0
NETWORK_TIMEOUT_S = 1.0
# How far past its timeout a request may end on a shared, busy machine.
LATE_S = 0.5
MIX_SEED = 20261202
MIX_CASES = 120
MiB = 1024 * 1024

Script = Callable[[socket.socket, threading.Event], None]


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = self.request.makefile("rb")
        server: ScriptedServer = self.server  # type: ignore[assignment]
        try:
            while reader.readline():  # a request line
                length = 0
                while (line := reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                reader.read(length)
                server.requests += 1
                keep_open = server.keep_open  # as it was when the request came: the client may answer first
                server.script(self.request, server.closing)
                if not keep_open:
                    break
        except OSError:
            pass  # the client gave up (its timeout) and closed: a forever-sender ends here
        finally:
            self.request.close()


class ScriptedServer(socketserver.ThreadingTCPServer):
    """Answers every request by running ``script`` on its socket, then closes the connection, unless
    ``keep_open`` says to wait for the next request on it."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script: Script = lambda sock, closing: None
        self.keep_open = False
        self.requests = 0
        self.closing = threading.Event()  # set at shutdown, so scripts that wait end

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedServer]:
    scripted = ScriptedServer()
    thread = threading.Thread(target=scripted.serve_forever, daemon=True)
    thread.start()
    try:
        yield scripted
    finally:
        scripted.closing.set()
        scripted.shutdown()
        scripted.server_close()


@dataclass
class Sent:
    m: Measurement
    elapsed_s: float
    peak_bytes: int  # traced Python memory at its highest during the request


def client(server: ScriptedServer) -> StampedHTTPClient:
    return StampedHTTPClient.from_url(
        server.url, concurrency=1, connection_timeout=NETWORK_TIMEOUT_S, network_timeout=NETWORK_TIMEOUT_S
    )


def send(server: ScriptedServer, api: ChatApi, script: Script, http: StampedHTTPClient | None = None) -> Sent:
    """One request on ``http`` (closed afterwards), or on a client of its own."""
    server.script = script
    http = http or client(server)
    body = encode_body(api.body("m", ({"role": "user", "content": "hi"},), 16))
    tracemalloc.start()
    started = time.perf_counter()
    try:
        m = send_chat(http, api, body, {"Content-Type": "application/json"}, REQUEST_TIMEOUT_S)
        elapsed_s = time.perf_counter() - started
        peak_bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        http.close()
    assert isinstance(m.outcome, Outcome)
    assert (m.error is None) == (m.outcome is Outcome.OK), m.error
    # The record a Locust user makes of it is valid and encodes as a row.
    record = request_record(
        api=api.api,
        outcome=m.outcome,
        http_status=m.http_status,
        server_request_id=m.server_request_id,
        error=m.error,
        chunk_offsets_ns=m.chunk_offsets_ns,
        late_chunks=m.late_chunks,
        end_offset_ns=m.end_offset_ns,
        prompt_tokens=m.prompt_tokens,
        output_tokens=m.output_tokens,
        server_timings_ms=m.server_timings_ms,
    )
    assert encode_request(record).endswith("\n")
    assert elapsed_s < REQUEST_TIMEOUT_S + LATE_S
    return Sent(m, elapsed_s, peak_bytes)


# --- streams and their framing -------------------------------------------------------------------

OPENAI, OLLAMA = APIS[Api.OPENAI_CHAT], APIS[Api.OLLAMA_CHAT]


def openai_body(tokens: list[str]) -> bytes:
    events = [{"choices": [{"delta": {"content": t}}]} for t in tokens]
    events.append({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": len(tokens)}})
    return b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events) + b"data: [DONE]\n\n"


def ollama_body(tokens: list[str]) -> bytes:
    lines = [{"message": {"role": "assistant", "content": t}, "done": False} for t in tokens]
    lines.append({"message": {"content": ""}, "done": True, "prompt_eval_count": 5, "eval_count": len(tokens)})
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


BODIES = {Api.OPENAI_CHAT: openai_body, Api.OLLAMA_CHAT: ollama_body}
CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def framed(rng: random.Random, body: bytes, framing: str, complete: bool = True) -> bytes:
    """A 200 response carrying ``body``: chunked (in random chunks), with a Content-Length, or ended by
    the close. ``complete=False`` leaves out the chunked terminator, as a cut connection would."""
    if framing == "length":
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    if framing == "close":
        return b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + body
    out, at = CHUNKED_HEAD, 0
    while at < len(body):
        size = rng.randint(1, max(1, len(body) // 3))
        out += chunk(body[at : at + size])
        at += size
    return out + (b"0\r\n\r\n" if complete else b"")


def writes(rng: random.Random, data: bytes) -> Script:
    """Send ``data`` cut at random points, sometimes pausing so the pieces arrive apart."""

    def script(sock: socket.socket, closing: threading.Event) -> None:
        cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(0, 12)))) if len(data) > 1 else []
        for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True):
            sock.sendall(data[a:b])
            if rng.random() < 0.5:
                time.sleep(0.0005)

    return script


def random_tokens(rng: random.Random) -> list[str]:
    alphabet = 'ab \u00e9\u4e16\U0001f600\n"\\'
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6))) for _ in range(rng.randint(1, 20))]


# --- the seeded mix ------------------------------------------------------------------------------


def mix_case(rng: random.Random) -> tuple[str, ChatApi, Script, Callable[[Measurement], bool]]:
    """One random case: its name, the API, what the server sends, and which outcomes are right."""
    api = rng.choice([OPENAI, OLLAMA])
    tokens = random_tokens(rng)
    body = BODIES[api.api](tokens)
    framing = rng.choice(["chunked", "length", "close"])
    kind = rng.choice(["valid", "cut", "garbage-body", "garbage-response", "bad-utf8", "bad-chunk",
                       "bad-chunk-size", "headers-only", "http-error"])  # fmt: skip
    name = f"{kind} {api.api.value} {framing}"

    def texts_are_a_prefix(m: Measurement) -> bool:
        return m.chunk_texts == tokens[: len(m.chunk_texts)]

    if kind == "valid":
        return (
            name,
            api,
            writes(rng, framed(rng, body, framing)),
            lambda m: m.outcome is Outcome.OK and (m.chunk_texts == tokens and m.output_tokens == len(tokens)),
        )
    if kind == "cut":  # closed anywhere before the final message's newline: mid-line, mid-chunk
        cut = body[: rng.randint(0, len(body.rstrip(b"\n")))]
        if framing == "length":  # promised the whole body, sent part of it
            data = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), cut)
        else:
            data = framed(rng, cut, framing, complete=False)
        return name, api, writes(rng, data), lambda m: m.outcome is Outcome.TRUNCATED and texts_are_a_prefix(m)
    if kind == "garbage-body":
        garbage = rng.randbytes(rng.randint(1, 3000))
        data = framed(rng, garbage, framing)
        return name, api, writes(rng, data), lambda m: m.outcome in (Outcome.INVALID_STREAM, Outcome.TRUNCATED)
    if kind == "garbage-response":
        data = rng.randbytes(rng.randint(1, 3000))
        return name, api, writes(rng, data), lambda m: m.outcome in (Outcome.CONNECTION_ERROR, Outcome.TRUNCATED)
    if kind == "bad-utf8":  # a byte that cannot start a UTF-8 character inside a token's JSON string
        at = body.index(b'"content":"') + len(b'"content":"')
        data = framed(rng, body[:at] + b"\xff" + body[at:], framing)
        return name, api, writes(rng, data), lambda m: m.outcome is Outcome.INVALID_STREAM and not m.chunk_texts
    if kind == "bad-chunk":  # a chunk promising more than it brings, then the close
        size = b"%x" % (len(body) + rng.randint(1, 100))
        data = CHUNKED_HEAD + size + b"\r\n" + body[: rng.randrange(0, len(body))]
        return name, api, writes(rng, data), lambda m: m.outcome is Outcome.TRUNCATED and texts_are_a_prefix(m)
    if kind == "bad-chunk-size":  # no number: see test_a_bad_chunk_size_right_after_the_headers_is_truncated
        data = CHUNKED_HEAD + b"zz\r\n" + body
        return name, api, writes(rng, data), lambda m: m.outcome in (Outcome.TRUNCATED, Outcome.CONNECTION_ERROR)
    if kind == "headers-only":
        data = framed(rng, b"", framing, complete=False)
        return name, api, writes(rng, data), lambda m: m.outcome is Outcome.TRUNCATED and m.http_status == 200
    status = rng.choice([400, 429, 500, 503])
    error_body = rng.randbytes(rng.randint(0, 100_000))
    data = b"HTTP/1.1 %d Error\r\nContent-Length: %d\r\n\r\n%s" % (status, len(error_body), error_body)
    return name, api, writes(rng, data), lambda m: m.outcome is Outcome.HTTP_ERROR and m.http_status == status


def test_every_case_of_a_seeded_mix_becomes_one_measurement_with_the_right_outcome(server: ScriptedServer) -> None:
    wrong = []
    for i in range(MIX_CASES):
        rng = random.Random(f"{MIX_SEED}-{i}")
        name, api, script, right = mix_case(rng)
        sent = send(server, api, script)
        if not right(sent.m):
            wrong.append(f"case {i} (seed {MIX_SEED}-{i}, {name}): {sent.m.outcome.value}: {sent.m.error}")
    assert not wrong, "\n".join(wrong)


# --- servers that never end ----------------------------------------------------------------------


def forever(head: bytes, line: bytes, per_write: int) -> Script:
    """Headers, then ``line`` forever, ``per_write`` at a time every millisecond (a pace a client keeps
    up with on a busy machine: see test_a_server_sending_as_fast_as_it_can_leaves_the_loop_free)."""

    def script(sock: socket.socket, closing: threading.Event) -> None:
        sock.sendall(head)
        block = chunk(line * per_write)
        while not closing.is_set():
            sock.sendall(block)
            time.sleep(0.001)

    return script


def test_keep_alives_forever_end_at_the_request_timeout_holding_none_of_them(server: ScriptedServer) -> None:
    sent = send(server, OPENAI, forever(CHUNKED_HEAD, b": " + b"k" * 4000 + b"\n\n", 5))
    assert sent.m.outcome is Outcome.TIMEOUT
    assert sent.elapsed_s >= REQUEST_TIMEOUT_S
    assert sent.m.response_bytes > 2 * MiB  # megabytes went through ...
    assert sent.peak_bytes < MiB  # ... and were not kept


@pytest.mark.parametrize("api", [OPENAI, OLLAMA], ids=lambda a: a.api.value)
def test_tokens_forever_end_at_the_request_timeout_with_memory_in_step_with_what_is_kept(
    server: ScriptedServer, api: ChatApi
) -> None:
    line = BODIES[api.api](["tok"]).split(b"\n")[0] + b"\n"
    sent = send(server, api, forever(CHUNKED_HEAD, line, 3))
    assert sent.m.outcome is Outcome.TIMEOUT
    assert len(sent.m.chunk_offsets_ns) > 1000
    # An offset and a text per chunk: about 100 bytes each, nothing else that grows with the stream.
    assert sent.peak_bytes < MiB + 200 * len(sent.m.chunk_offsets_ns)


def test_headers_then_silence_end_at_the_network_timeout(server: ScriptedServer) -> None:
    sent = send(server, OPENAI, lambda sock, closing: (sock.sendall(CHUNKED_HEAD), closing.wait(10)))
    assert sent.m.outcome is Outcome.TIMEOUT
    assert sent.m.http_status == 200
    assert sent.elapsed_s < NETWORK_TIMEOUT_S + LATE_S


def test_a_line_over_the_cap_is_an_invalid_stream(server: ScriptedServer) -> None:
    huge = b'data: {"choices":[{"delta":{"content":"' + b"x" * (MAX_LINE_BYTES + 1) + b'"}}]}\n\n'
    sent = send(server, OPENAI, writes(random.Random(1), framed(random.Random(1), huge + openai_body([]), "length")))
    assert sent.m.outcome is Outcome.INVALID_STREAM
    assert sent.m.error is not None and "a line longer than" in sent.m.error


def test_a_body_without_newlines_is_refused_at_the_line_cap(server: ScriptedServer) -> None:
    sent = send(server, OPENAI, forever(CHUNKED_HEAD + chunk(b"data: "), b"x" * 1024, 64))
    assert sent.m.outcome is Outcome.INVALID_STREAM
    assert sent.m.error is not None and "a line longer than" in sent.m.error
    assert sent.peak_bytes < 3 * MAX_LINE_BYTES


def firehose(sock: socket.socket, closing: threading.Event) -> None:
    """Tokens as fast as the socket takes them, for a while: the reader always finds a line waiting."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)  # a short backlog once it stops
    sock.sendall(CHUNKED_HEAD)
    block = chunk(openai_body(["tok"] * 200).split(b'data: {"choices":[]')[0])
    stop_at = time.monotonic() + REQUEST_TIMEOUT_S + 0.5  # the client's timeout may not fire while it lasts
    while time.monotonic() < stop_at and not closing.is_set():
        sock.sendall(block)


def test_a_server_sending_as_fast_as_it_can_leaves_the_loop_free(server: ScriptedServer) -> None:
    ticks: list[float] = []

    def tick() -> None:
        while True:
            gevent.sleep(0.01)
            ticks.append(time.perf_counter())

    ticker = gevent.spawn(tick)
    try:
        send(server, OPENAI, firehose)
    finally:
        ticker.kill()
    # A greenlet that sleeps 10 ms at a time runs most of its turns, as it does beside any other stream.
    assert len(ticks) > 0.5 * REQUEST_TIMEOUT_S / 0.01


def test_a_bad_chunk_size_right_after_the_headers_is_truncated(server: ScriptedServer) -> None:
    sent = send(server, OPENAI, lambda sock, closing: sock.sendall(CHUNKED_HEAD + b"zz\r\n" + openai_body(["a"])))
    assert sent.m.outcome is Outcome.TRUNCATED


@pytest.mark.parametrize(
    "broken",
    [
        b"HTTP/1.1 200 OK\r\nContent-Ty",
        b"HTTP/1.1 500 Intern",
        CHUNKED_HEAD + b"zz\r\n",
        CHUNKED_HEAD + chunk(openai_body(["a"])[:20]),
    ],
    ids=["mid-headers", "mid-status-line", "bad-chunk", "mid-body"],
)
def test_a_reused_connection_closed_after_part_of_a_response_is_not_sent_again(
    server: ScriptedServer, broken: bytes
) -> None:
    """Only a request that got no byte of a response may be sent again: this one reached the server."""
    http = client(server)
    body = openai_body(["a"])
    first = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    server.keep_open, server.requests = True, 0
    try:
        server.script = lambda sock, closing: sock.sendall(first)
        assert send_chat(http, OPENAI, b"{}", {}, REQUEST_TIMEOUT_S).outcome is Outcome.OK
        server.keep_open = False
        sent = send(server, OPENAI, lambda sock, closing: sock.sendall(broken), http)
    finally:
        server.keep_open = False
    assert sent.m.reconnects == 0
    assert server.requests == 2
    assert sent.m.outcome in (Outcome.CONNECTION_ERROR, Outcome.TRUNCATED)
