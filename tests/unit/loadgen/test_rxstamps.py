"""A chunk's time: the kernel's receive stamp of the read that completed it, when plausible, else that read's time."""

import functools
import os
import resource
import socket
import struct
import time

import gevent
import gevent.select
import pytest
from geventhttpclient.response import HTTPSocketResponse

from loadgen.clients import Measurement, _read_stream
from loadgen.parsers import OpenAIParser
from loadgen.rxstamps import (
    MAX_AGE_NS,
    SO_TIMESTAMPNS,
    ReadStamps,
    StampedSocket,
    chunk_time_ns,
    idle_and_open,
    kernel_stamp_ns,
)

SENT_NS = 1_000_000_000
READ_NS = SENT_NS + 50_000_000


def test_the_timespec_in_the_ancillary_data_is_the_stamp() -> None:
    timespec = struct.pack("@ll", 1_795_000_000, 123_456_789)
    other = (socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", 3))
    assert kernel_stamp_ns([other, (socket.SOL_SOCKET, SO_TIMESTAMPNS, timespec)]) == 1_795_000_000_123_456_789
    assert kernel_stamp_ns([other]) is None
    assert kernel_stamp_ns([]) is None


def test_a_plausible_kernel_stamp_is_the_chunk_time() -> None:
    stamps = ReadStamps(read_ns=READ_NS, received_ns=SENT_NS + 2_000_000)
    assert chunk_time_ns(stamps, SENT_NS, now_ns=READ_NS + 10) == SENT_NS + 2_000_000


def test_an_implausible_or_missing_stamp_falls_back_to_the_read_time() -> None:
    for received_ns in (
        None,  # no ancillary data: not Linux, AF_UNIX, or a segment that came before the option
        READ_NS + 1,  # later than the read
        READ_NS - MAX_AGE_NS - 1,  # far older than the read: a clock step
        SENT_NS - 1,  # before the request was sent
    ):
        stamps = ReadStamps(read_ns=READ_NS, received_ns=received_ns)
        assert chunk_time_ns(stamps, SENT_NS, now_ns=READ_NS + 10) == READ_NS, received_ns


def test_without_a_read_since_the_send_the_caller_clock_counts() -> None:
    stamps = ReadStamps(read_ns=SENT_NS - 5, received_ns=SENT_NS - 10)  # the previous request's last read
    assert chunk_time_ns(stamps, SENT_NS, now_ns=READ_NS) == READ_NS


def _stamped_pair() -> tuple[socket.socket, StampedSocket]:
    server, client = socket.socketpair()  # AF_UNIX: Linux gives stream sockets no receive stamps
    return server, StampedSocket(ReadStamps(), fileno=client.detach())


def test_a_socket_without_ancillary_data_records_its_read_time() -> None:
    server, client = _stamped_pair()
    with server, client:
        server.sendall(b"hello\n")
        before = time.perf_counter_ns()
        assert client.recv(100) == b"hello\n"
        after = time.perf_counter_ns()
        assert client.stamps.received_ns is None
        assert before <= client.stamps.read_ns <= after


def test_a_read_says_whether_it_ended_inside_a_line() -> None:
    server, client = _stamped_pair()
    with server, client:
        server.sendall(b"one\ntw")
        assert client.recv(100) == b"one\ntw" and not client.stamps.ends_line
        server.sendall(b"o\n")
        buffer = bytearray(100)
        assert client.recv_into(buffer) == 2 and client.stamps.ends_line


def test_a_line_left_in_the_buffer_keeps_the_time_of_the_read_that_brought_it() -> None:
    server, client = _stamped_pair()
    with server, client:
        start_ns = time.perf_counter_ns()
        body = b"".join(
            b"%x\r\n%b\r\n" % (len(event), event)
            for event in (b'data: {"choices": [{"delta": {"content": "a"}}]}\n\n', b"data: [DONE]\n\n")
        )
        server.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body + b"0\r\n\r\n")
        response = HTTPSocketResponse(client)  # one read brings the head and the whole body
        read_ns = client.stamps.read_ns
        gevent.sleep(0.03)  # the loop gets to the buffered lines late
        m = Measurement()
        _read_stream(response, OpenAIParser(), start_ns, m, client.stamps)
    assert m.chunk_texts == ["a"]
    assert m.chunk_offsets_ns == [read_ns - start_ns]  # not 30 ms later, when readline returned it


def test_a_pooled_connection_is_checked_without_yielding_to_other_greenlets() -> None:
    ran: list[str] = []
    gevent.spawn(ran.append, "other")  # ready to run at the next switch
    server, client = _stamped_pair()
    with server, client:
        assert idle_and_open(client)
        assert ran == []  # the request's send would not wait behind other users
        gevent.select.select([client], [], [], 0.0)  # what geventhttpclient calls once Locust patched select
        assert ran == ["other"]
        server.sendall(b"stray")
        assert not idle_and_open(client)
        server.close()
        client.recv(100)
        assert not idle_and_open(client)  # readable: the peer closed
    assert not idle_and_open(client)  # closed here
    assert not idle_and_open(None)


def test_a_connection_past_descriptor_1023_is_still_reused() -> None:
    # select() refuses descriptors past 1,023; Locust raises the open-file limit well beyond that.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"the open-file limit ({hard}) leaves no descriptor past 1,023")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    server, client = socket.socketpair()
    high = socket.socket(fileno=os.dup2(client.fileno(), 1100))
    try:
        assert idle_and_open(high)
        server.sendall(b"stray")
        assert not idle_and_open(high)
    finally:
        for s in (high, client, server):
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class _FakeResponse:
    """The response internals the client reads lines from: a body buffer its socket's reads fill."""

    block_size = 4096

    def __init__(self) -> None:
        self._body_buffer = bytearray()
        self._sock = self

    @property
    def message_complete(self) -> bool:
        return not self._reads

    def feed(self, data: bytes) -> None:
        self._body_buffer += data

    def recv(self, size: int) -> bytes:
        return self._reads.pop(0)()

    def release(self) -> None:
        pass


class _ScriptedResponse(_FakeResponse):
    """Each read takes one line, as if stamped with the given (read, kernel) times."""

    def __init__(self, stamps: ReadStamps, lines: list[tuple[bytes, int, int | None]]) -> None:
        super().__init__()
        self._stamps = stamps
        self._reads = [functools.partial(self._read, stamps, *line) for line in lines]

    @staticmethod
    def _read(stamps: ReadStamps, line: bytes, read_ns: int, received_ns: int | None) -> bytes:
        stamps.read_ns, stamps.received_ns = read_ns, received_ns
        return line


class _OneLateRead(_FakeResponse):
    """After the headers' read, one read takes the given lines: segments the kernel stamped at 20 ms
    (the oldest) and 40 ms (the newest), as when the reader fell a step behind."""

    def __init__(self, stamps: ReadStamps, start_ns: int, lines: list[bytes]) -> None:
        super().__init__()
        self._stamps, self._start_ns, self._lines = stamps, start_ns, lines
        self._reads = [self._read]

    def _read(self) -> bytes:
        self._stamps.read_ns = self._start_ns + 45_000_000
        self._stamps.first_received_ns = self._start_ns + 20_000_000
        self._stamps.received_ns = self._start_ns + 40_000_000
        return b"".join(self._lines)


TOKEN = b'data: {"choices": [{"delta": {"content": "a"}}]}\n'
ROLE = b'data: {"choices": [{"delta": {"role": "assistant", "content": ""}}]}\n'


def _read_late(lines: list[bytes]) -> Measurement:
    start_ns = time.perf_counter_ns()
    stamps = ReadStamps(read_ns=start_ns + 1_000, received_ns=start_ns + 500, first_received_ns=start_ns + 500)
    m = Measurement()
    _read_stream(_OneLateRead(stamps, start_ns, lines), OpenAIParser(), start_ns, m, stamps)
    return m


def test_the_first_line_a_read_completes_gets_the_oldest_segments_stamp() -> None:
    m = _read_late([TOKEN, b"\n", TOKEN, b"\n", b"data: [DONE]\n"])
    assert m.chunk_offsets_ns == [20_000_000, 40_000_000]  # not both at 40 ms
    assert m.late_chunks == [0]  # the kernel may have merged the two segments: 20 ms is an upper bound


def test_an_output_after_the_first_line_is_never_given_the_oldest_stamp() -> None:
    # A role-only delta sent on its own, earlier: the token that follows did not come at 20 ms.
    m = _read_late([ROLE, b"\n", TOKEN, b"\n", b"data: [DONE]\n"])
    assert m.chunk_offsets_ns == [40_000_000] and m.late_chunks == []


def test_a_keep_alive_or_a_line_cut_short_in_the_same_read_makes_an_output_late() -> None:
    assert _read_late([b"\n", TOKEN, b"\n", b": ping\n", b"\n", b"data: [DONE]\n"]).late_chunks == [0]
    start_ns = time.perf_counter_ns()
    stamps = ReadStamps(read_ns=start_ns + 1_000, received_ns=start_ns + 500)
    response = _ScriptedResponse(stamps, [(TOKEN, start_ns + 21_000_000, start_ns + 20_000_000)])
    stamps.ends_line = False  # the read that brought it ended inside the next line
    m = Measurement()
    _read_stream(response, OpenAIParser(), start_ns, m, stamps)
    assert m.chunk_offsets_ns == [20_000_000] and m.late_chunks == [0]


def test_outputs_each_read_on_its_own_are_not_late() -> None:
    start_ns = time.perf_counter_ns()
    token = b'data: {"choices": [{"delta": {"content": "a"}}]}\n'
    response = _ScriptedResponse(
        ReadStamps(),
        [
            (token, start_ns + 21_000_000, start_ns + 20_000_000),
            (token, start_ns + 41_000_000, start_ns + 40_000_000),
            (b"data: [DONE]\n", start_ns + 41_000_000, start_ns + 40_000_000),  # with the last token: not an output
        ],
    )
    m = Measurement()
    _read_stream(response, OpenAIParser(), start_ns, m, response._stamps)
    assert m.chunk_offsets_ns == [20_000_000, 40_000_000] and m.late_chunks == []


def test_chunk_times_never_go_back_when_an_unstamped_read_came_first() -> None:
    stamps = ReadStamps()
    start_ns = time.perf_counter_ns()
    event = b'data: {"choices": [{"delta": {"content": "a"}}]}\n'
    response = _ScriptedResponse(
        stamps,
        [
            (event, start_ns + 30_000_000, None),  # no stamp: timed when read, 30 ms in
            (event, start_ns + 31_000_000, start_ns + 20_000_000),  # arrived at 20 ms, before that read
            (event, start_ns + 45_000_000, start_ns + 40_000_000),
            (b"data: [DONE]\n", start_ns + 46_000_000, start_ns + 40_000_100),
        ],
    )
    m = Measurement()
    _read_stream(response, OpenAIParser(), start_ns, m, stamps)
    assert m.chunk_offsets_ns == [30_000_000, 30_000_000, 40_000_000]
    assert m.end_offset_ns == 40_000_100  # the last line's arrival, not when the loop read it
