"""On loopback TCP, a chunk read late is timed when the kernel received it, not when the loop read it.

Linux turns receive stamping on for the whole host lazily, after the first socket asks for it, so
segments in the first moment may come unstamped (and fall back to the read time): a module fixture
keeps one stamped connection open and waits until its reads carry stamps.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import gevent
import gevent.monkey
import gevent.socket
import pytest

from loadgen import rxstamps
from loadgen.clients import APIS, Measurement, encode_body, send_chat
from loadgen.rxstamps import STAMPS_SUPPORTED, ReadStamps, StampedHTTPClient, StampedSocket, chunk_time_ns
from stampede.records import Api
from tests.integration.stub_server import DONE, USAGE, chunk, content

pytestmark = pytest.mark.skipif(not STAMPS_SUPPORTED, reason="SO_TIMESTAMPNS is Linux only")

BLOCK_S = 0.1
real_sleep = gevent.monkey.get_original("time", "sleep")  # blocks the whole loop, as a busy process would


def _connected_pair() -> tuple[gevent.socket.socket, StampedSocket]:
    listener = gevent.socket.socket()
    with listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = StampedSocket(ReadStamps(), socket.AF_INET, socket.SOCK_STREAM)
        client.connect(listener.getsockname())
        server, _ = listener.accept()
    return server, client


@pytest.fixture(scope="module", autouse=True)
def stamping_on() -> Iterator[None]:
    server, client = _connected_pair()
    with server, client:
        deadline = time.monotonic() + 5
        while True:
            server.sendall(b"x")
            client.recv(10)
            if client.stamps.received_ns is not None:
                break
            assert time.monotonic() < deadline, "the kernel never stamped a segment"
            gevent.sleep(0.01)
        yield


def test_a_late_read_gets_the_time_the_bytes_arrived() -> None:
    server, client = _connected_pair()
    with server, client:
        sent_ns = time.perf_counter_ns()
        server.sendall(b"data: x\n")
        arrived_by_ns = time.perf_counter_ns()
        real_sleep(0.05)
        assert client.recv(100) == b"data: x\n"
        stamps = client.stamps
    assert stamps.received_ns is not None
    assert stamps.read_ns - arrived_by_ns >= 50_000_000
    assert sent_ns - 1_000_000 <= stamps.received_ns <= arrived_by_ns  # within the sendall (1 ms for clock noise)
    assert chunk_time_ns(stamps, sent_ns - 1_000_000, time.perf_counter_ns()) == stamps.received_ns


def _serve_one_stream(listener: gevent.socket.socket) -> None:
    """Answer one request: the head and a first chunk at once, then hold the whole loop, then the rest."""
    conn, _ = listener.accept()
    with conn:
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        conn.sendall(chunk(content("a")))
        real_sleep(BLOCK_S)  # the client's greenlet cannot read meanwhile
        gevent.sleep(0.05)
        conn.sendall(chunk(content("b")) + chunk(USAGE) + chunk(DONE) + b"0\r\n\r\n")


def _send_while_the_loop_is_held(http: StampedHTTPClient, listener: gevent.socket.socket) -> Measurement:
    server = gevent.spawn(_serve_one_stream, listener)
    api = APIS[Api.OPENAI_CHAT]
    body = encode_body(api.body("m", ({"role": "user", "content": "hi"},), 4))
    try:
        return send_chat(http, api, body, {"Content-Type": "application/json"}, timeout_s=10)
    finally:
        server.join(timeout=5)
        http.close()


@pytest.fixture
def listener() -> Iterator[gevent.socket.socket]:
    sock = gevent.socket.socket()
    with sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock


def test_a_chunk_that_waited_behind_a_busy_loop_keeps_its_arrival_time(listener: gevent.socket.socket) -> None:
    port = listener.getsockname()[1]
    m = _send_while_the_loop_is_held(StampedHTTPClient("127.0.0.1", port, concurrency=1), listener)
    assert m.chunk_texts == ["a", "b"], m.error
    assert m.chunk_offsets_ns[0] < BLOCK_S * 1e9 / 2  # arrived at once, read after the hold
    assert m.chunk_offsets_ns[1] - m.chunk_offsets_ns[0] >= BLOCK_S * 1e9


def test_without_kernel_stamps_the_same_chunk_is_timed_when_it_was_read(
    listener: gevent.socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The contrast that shows the test above can fail: sockets made where the option is missing."""
    monkeypatch.setattr(rxstamps, "STAMPS_SUPPORTED", False)
    port = listener.getsockname()[1]
    m = _send_while_the_loop_is_held(StampedHTTPClient("127.0.0.1", port, concurrency=1), listener)
    assert m.chunk_texts == ["a", "b"], m.error
    assert m.chunk_offsets_ns[0] >= BLOCK_S * 1e9


def _serve_while_the_loop_is_held(listener: gevent.socket.socket) -> None:
    """Answer one request: the head, then three chunks 5, 40 and 40 ms apart with the loop held (the
    client finds them all waiting), then the rest after the client read them."""
    conn, _ = listener.accept()
    with conn:
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        for text, gap_s in (("a", 0.005), ("b", 0.04), ("c", 0.04)):
            real_sleep(gap_s)
            conn.sendall(chunk(content(text)))
        real_sleep(0.2)
        gevent.sleep(0.05)
        conn.sendall(chunk(USAGE) + chunk(DONE) + b"0\r\n\r\n")


def test_chunks_that_waited_behind_a_later_one_are_listed_late(listener: gevent.socket.socket) -> None:
    """Linux often merges segments waiting in a socket under the newest one's stamp (tcp_try_coalesce):
    a and b may get c's arrival time, about 85 ms in, and say so. c's time is its own, not the read's."""
    server = gevent.spawn(_serve_while_the_loop_is_held, listener)
    http = StampedHTTPClient("127.0.0.1", listener.getsockname()[1], concurrency=1)
    api = APIS[Api.OPENAI_CHAT]
    body = encode_body(api.body("m", ({"role": "user", "content": "hi"},), 4))
    try:
        m = send_chat(http, api, body, {}, timeout_s=10)
    finally:
        server.join(timeout=5)
        http.close()
    assert m.chunk_texts == ["a", "b", "c"], m.error
    assert m.late_chunks == [0, 1]
    a, b, c = m.chunk_offsets_ns
    assert a >= 5_000_000 and b >= 45_000_000  # never early
    assert 85_000_000 <= c < 200_000_000  # read at 285 ms or later


def _serve_keep_alive(listener: gevent.socket.socket, requests: int) -> None:
    """Answer ``requests`` requests on one kept-alive connection, each with one chunk at once."""
    conn, _ = listener.accept()
    with conn:
        for _ in range(requests):
            conn.recv(65536)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                + chunk(content("a")) + chunk(USAGE) + chunk(DONE) + b"0\r\n\r\n"
            )  # fmt: skip


def test_ttft_starts_as_the_request_is_written_not_as_it_is_built(
    listener: gevent.socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    build = StampedHTTPClient._build_request

    def slow_build(self: StampedHTTPClient, *args: object, **kwargs: object) -> str:
        real_sleep(BLOCK_S)  # a busy client: the loop is held between the clock's start and the write
        return build(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(StampedHTTPClient, "_build_request", slow_build)
    server = gevent.spawn(_serve_keep_alive, listener, 2)
    http = StampedHTTPClient("127.0.0.1", listener.getsockname()[1], concurrency=1)
    api = APIS[Api.OPENAI_CHAT]
    body = encode_body(api.body("m", ({"role": "user", "content": "hi"},), 4))
    try:
        opener, reuser = (send_chat(http, api, body, {}, timeout_s=10) for _ in range(2))
    finally:
        server.join(timeout=5)
        http.close()
    assert opener.chunk_texts == reuser.chunk_texts == ["a"], (opener.error, reuser.error)
    assert opener.chunk_offsets_ns[0] >= BLOCK_S * 1e9  # it opened its connection: the clock starts at the call
    assert reuser.chunk_offsets_ns[0] < BLOCK_S * 1e9 / 2  # from the write
