"""A ground truth for TTFT taken from the wire: a loopback packet capture, stamped by the kernel.

The simulator's own truth starts TTFT when its event loop parses a request; under load a request
waits in its socket before that, so the truth is late by the wait (ms at 200 streams). The wire is
independent of both processes: :class:`LoopbackCapture` reads every TCP segment that carries data
to or from one port on ``lo`` (an ``AF_PACKET`` socket, needs ``CAP_NET_RAW``), each with the
kernel's ``SO_TIMESTAMPNS`` stamp (``CLOCK_REALTIME``, the same stamp the client's socket reads
for those bytes: the receive path sets it once). A classic BPF filter keeps only what is needed in
the kernel: IPv4 TCP with a payload, to or from the port, and of the two copies ``lo`` shows of a
packet only the incoming one (``PACKET_HOST``), so the thread reading them stays cheap.

:func:`reconstruct` rebuilds each connection's requests and responses (HTTP/1.1 keep-alive, one
request at a time, chunked SSE bodies) and gives, per request, the stamp of its first packet and the
stamp of the packet that completed the first chunk with output text (found with the client's own
:class:`~loadgen.parsers.OpenAIParser`), and the ``X-Request-Id`` the server answered with. Only
differences of stamps are used, so the realtime clock needs no conversion.
"""

from __future__ import annotations

import ctypes
import socket
import struct
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from loadgen.parsers import OpenAIParser, OutputChunk

SO_TIMESTAMPNS = 35  # Linux <asm-generic/socket.h>; see loadgen/rxstamps.py
SO_ATTACH_FILTER = 26
SO_RCVBUFFORCE = 33
SOL_PACKET = 263
PACKET_STATISTICS = 6
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
_TIMESPEC = struct.Struct("@ll")
_ANCILLARY_BYTES = socket.CMSG_SPACE(_TIMESPEC.size)
_IPV4_TCP = struct.Struct("!HxxxxxxBxxxxxxxx")  # from byte 14 + 2: total length ... protocol
_TCP = struct.Struct("!HHI")  # source port, destination port, sequence number
NEEDS = "a loopback packet capture needs Linux and root or CAP_NET_RAW (AF_PACKET on lo)"


def bpf_program(port: int) -> list[tuple[int, int, int, int]]:
    """Classic BPF: accept IPv4 TCP segments with a payload, to or from ``port``, as received on lo."""
    drop, accept = 19, 20
    return [
        (0x28, 0, 0, 12),  # 0  ldh [12]: ethertype
        (0x15, 0, drop - 2, 0x0800),  # 1  IPv4, else drop
        (0x30, 0, 0, 0xFFFFF004),  # 2  ldb pkttype (SKF_AD_OFF + SKF_AD_PKTTYPE)
        (0x15, drop - 4, 0, PACKET_OUTGOING),  # 3  lo's outgoing copy: drop (keep the received one)
        (0x30, 0, 0, 23),  # 4  ldb [23]: IP protocol
        (0x15, 0, drop - 6, 6),  # 5  TCP, else drop
        (0xB1, 0, 0, 14),  # 6  ldxb 4*([14]&0xf): IP header length
        (0x48, 0, 0, 14),  # 7  ldh [x+14]: source port
        (0x15, 11 - 9, 0, port),  # 8  from the port: skip to 11
        (0x48, 0, 0, 16),  # 9  ldh [x+16]: destination port
        (0x15, 0, drop - 11, port),  # 10 to the port, else drop
        (0x50, 0, 0, 26),  # 11 ldb [x+26]: TCP data offset (high nibble)
        (0x54, 0, 0, 0xF0),  # 12 and #0xf0
        (0x74, 0, 0, 2),  # 13 rsh #2: TCP header length
        (0x0C, 0, 0, 0),  # 14 add x: headers
        (0x02, 0, 0, 0),  # 15 st M[0]
        (0x28, 0, 0, 16),  # 16 ldh [16]: IP total length
        (0x61, 0, 0, 0),  # 17 ldx M[0]
        (0x2D, accept - 19, drop - 19, 0),  # 18 total > headers: a payload
        (0x06, 0, 0, 0),  # 19 drop
        (0x06, 0, 0, 0x40000),  # 20 accept, up to 256 KiB
    ]


def _attach_filter(sock: socket.socket, program: list[tuple[int, int, int, int]]) -> None:
    code = b"".join(struct.pack("HBBI", *insn) for insn in program)
    buffer = ctypes.create_string_buffer(code)
    fprog = struct.pack("HL", len(program), ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


class LoopbackCapture(threading.Thread):
    """Reads ``(realtime stamp ns, frame)`` pairs from lo for ``port`` until :meth:`finish`.

    Opening raises ``PermissionError`` (with :data:`NEEDS`) without ``CAP_NET_RAW``. Frames are only
    collected while the load runs; :func:`reconstruct` parses them afterwards. At 200 streams (about
    8k data segments a second) the thread costs about 4% of one core.
    """

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True, name="loopback-capture")
        try:
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        except (PermissionError, AttributeError) as exc:
            raise PermissionError(f"{NEEDS}: {exc}") from exc
        _attach_filter(self.sock, bpf_program(port))
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        try:  # room for seconds of segments should the thread fall behind; past rmem_max needs CAP_NET_ADMIN
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 * 1024 * 1024)
        except PermissionError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024 * 1024)
        self.sock.bind(("lo", 0))
        self.sock.settimeout(0.2)
        self.packets: list[tuple[int, bytes]] = []
        self.unstamped = 0
        self.cpu_s = 0.0  # CPU seconds this thread used, once finished
        self._done = threading.Event()

    def run(self) -> None:
        started_s = time.thread_time()
        try:
            self._read()
        finally:
            self.cpu_s = time.thread_time() - started_s

    def _read(self) -> None:
        # Kernel stamps make reading late harmless (up to the buffer), so this loop only has to keep up.
        recvmsg, append = self.sock.recvmsg, self.packets.append
        while not self._done.is_set():
            try:
                frame, ancdata, _, _ = recvmsg(0x40000, _ANCILLARY_BYTES)
            except TimeoutError:
                continue
            if ancdata and ancdata[0][1] == SO_TIMESTAMPNS:
                sec, nsec = _TIMESPEC.unpack_from(ancdata[0][2])
                append((sec * 1_000_000_000 + nsec, frame))
            else:
                self.unstamped += 1

    def finish(self) -> int:
        """Stop reading and close; returns the packets the kernel dropped for want of buffer."""
        self._done.set()
        self.join()
        _, drops = struct.unpack("II", self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
        self.sock.close()
        return int(drops)


def tcp_segment(frame: bytes) -> tuple[int, int, int, bytes] | None:
    """``(source port, destination port, sequence number, payload)`` of an Ethernet/IPv4/TCP frame."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00" or frame[23] != 6:
        return None
    ip_total, _ = _IPV4_TCP.unpack_from(frame, 14 + 2)
    tcp = 14 + (frame[14] & 0x0F) * 4
    source, dest, seq = _TCP.unpack_from(frame, tcp)
    payload = frame[tcp + (frame[tcp + 12] >> 4) * 4 : 14 + ip_total]
    return source, dest, seq, payload


@dataclass
class WireRequest:
    """One request as the wire saw it; stamps in realtime ns."""

    client_port: int
    index: int  # on its connection: 0 is the request that opened it
    sent_ns: int
    request_id: str | None = None
    first_output_ns: int | None = None

    @property
    def ttft_ns(self) -> int | None:
        return None if self.first_output_ns is None else self.first_output_ns - self.sent_ns


def _new_bytes(next_seq: int | None, seq: int, payload: bytes) -> bytes | None:
    """The part of a segment not seen before; None when bytes before it are missing (lost by the capture)."""
    if next_seq is None:
        return payload
    skip = (next_seq - seq) & 0xFFFFFFFF
    if skip >= 0x80000000:
        return None
    return payload[skip:]  # empty for a retransmission of bytes already seen


class _Connection:
    """Requests (Content-Length bodies) one way, chunked responses the other, paired in order."""

    def __init__(self, client_port: int) -> None:
        self.client_port = client_port
        self.next_seq: dict[bool, int | None] = {True: None, False: None}  # by direction: upward?
        self.broken = False
        self.requests: list[WireRequest] = []
        self._up = bytearray()
        self._request_left = 0  # body bytes of the current request still to come
        self._request_start_ns = 0
        self._down = bytearray()
        self.answered = 0  # requests whose response has begun
        self._head: bytes | None = None  # the current response's head, once complete
        self._body_left = 0  # bytes of the current chunk (with its CRLF) or Content-Length body to come
        self._parser: OpenAIParser | None = None  # while a chunked body's first output is still to come
        self._chunked = False

    def segment(self, upward: bool, stamp_ns: int, seq: int, payload: bytes) -> None:
        data = _new_bytes(self.next_seq[upward], seq, payload)
        if data is None:
            self.broken = True
            return
        self.next_seq[upward] = (seq + len(payload)) & 0xFFFFFFFF
        if data:
            (self._client_data if upward else self._server_data)(stamp_ns, data)

    def _client_data(self, stamp_ns: int, data: bytes) -> None:
        buffer = self._up
        if not buffer and not self._request_left:
            self._request_start_ns = stamp_ns  # a new request's first bytes
        buffer += data
        while buffer:
            if self._request_left:
                used = min(self._request_left, len(buffer))
                del buffer[:used]
                self._request_left -= used
                if buffer:
                    self._request_start_ns = stamp_ns
                continue
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            self.requests.append(WireRequest(self.client_port, len(self.requests), self._request_start_ns))
            self._request_left = _content_length(bytes(buffer[:end]))
            del buffer[: end + 4]

    def _server_data(self, stamp_ns: int, data: bytes) -> None:
        buffer = self._down
        buffer += data
        while buffer:
            if self._head is None:
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                self._start_response(bytes(buffer[:end]))
                del buffer[: end + 4]
            elif self._body_left:
                used = min(self._body_left, len(buffer))
                if self._parser is not None:
                    self._feed(bytes(buffer[:used]), stamp_ns)
                del buffer[:used]
                self._body_left -= used
                if not self._body_left and not self._chunked:
                    self._head = None  # a Content-Length body is over
            elif not self._chunked:
                self._head = None  # an empty Content-Length body
            else:
                end = buffer.find(b"\r\n")
                if end < 0:
                    return
                size = int(bytes(buffer[:end]).split(b";")[0], 16)
                del buffer[: end + 2]
                self._body_left = size + 2  # the data and its CRLF (harmless to the parser)
                if not size:
                    self._chunked = False  # the last chunk: its CRLF, then the next response

    def _start_response(self, head: bytes) -> None:
        self._head = head
        request = self.requests[self.answered] if self.answered < len(self.requests) else None
        self.answered += 1
        if request is not None:
            request.request_id = _header(head, b"x-request-id")
        self._chunked = "chunked" in (_header(head, b"transfer-encoding") or "").lower()
        self._body_left = 0 if self._chunked else _content_length(head)
        self._parser = OpenAIParser() if self._chunked and request is not None else None

    def _feed(self, data: bytes, stamp_ns: int) -> None:
        assert self._parser is not None
        for event in self._parser.feed(data, stamp_ns):
            if isinstance(event, OutputChunk):
                self.requests[self.answered - 1].first_output_ns = event.offset_ns
                self._parser = None  # the rest of the body only needs framing
                return


def _header(head: bytes, name: bytes) -> str | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip().decode("latin-1")
    return None


def _content_length(head: bytes) -> int:
    value = _header(head, b"content-length")
    return int(value) if value else 0


def reconstruct(packets: Iterable[tuple[int, bytes]], server_port: int) -> tuple[list[WireRequest], int]:
    """Every request seen on the wire, in order per connection, and how many connections had a gap.

    A connection with missing bytes (a full capture buffer) keeps the requests it completed before
    the gap and loses the rest; the caller reports the count (the kernel's drop count says the same).
    """
    connections: dict[int, _Connection] = {}
    for stamp_ns, frame in packets:
        segment = tcp_segment(frame)
        if segment is None or not segment[3]:
            continue
        source, dest, seq, payload = segment
        upward = dest == server_port
        client_port = source if upward else dest
        conn = connections.get(client_port)
        if conn is None:
            conn = connections[client_port] = _Connection(client_port)
        if not conn.broken:
            conn.segment(upward, stamp_ns, seq, payload)
    requests = []
    for conn in connections.values():
        for request in conn.requests:
            if not conn.broken or request.first_output_ns is not None:
                requests.append(request)
    return requests, sum(conn.broken for conn in connections.values())
