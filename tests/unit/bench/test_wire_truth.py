"""Rebuilding requests and first tokens from hand-made loopback frames (no capture, no network)."""

import struct

import orjson

from bench.wire_truth import reconstruct, tcp_segment

SERVER = 8000


def frame(source: int, dest: int, seq: int, payload: bytes, padding: bytes = b"") -> bytes:
    """Ethernet (lo's zero addresses) / IPv4 (20 bytes) / TCP (20 bytes) / payload, plus link padding."""
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40 + len(payload), 0, 0, 64, 6, 0, bytes(4), bytes(4))
    tcp = struct.pack("!HHIIBBHHH", source, dest, seq, 0, 5 << 4, 0x18, 65535, 0, 0)
    return bytes(12) + b"\x08\x00" + ip + tcp + payload + padding


def request(body: bytes = b'{"stream":true}') -> bytes:
    return b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)


def head(request_id: str) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
        b"X-Request-Id: %b\r\n\r\n" % request_id.encode()
    )


def chunk(delta: dict) -> bytes:
    data = b"data: " + orjson.dumps({"choices": [{"index": 0, "delta": delta}]}) + b"\n\n"
    return b"%x\r\n%b\r\n" % (len(data), data)


END = b"%x\r\n%b\r\n" % (len(b"data: [DONE]\n\n"), b"data: [DONE]\n\n") + b"0\r\n\r\n"


class Wire:
    """One client connection's two byte streams, cut into frames stamped by the caller."""

    def __init__(self, client_port: int) -> None:
        self.port, self.up_seq, self.down_seq = client_port, 1000, 5000
        self.frames: list[tuple[int, bytes]] = []

    def up(self, stamp: int, data: bytes) -> None:
        self.frames.append((stamp, frame(self.port, SERVER, self.up_seq, data)))
        self.up_seq += len(data)

    def down(self, stamp: int, data: bytes) -> None:
        self.frames.append((stamp, frame(SERVER, self.port, self.down_seq, data)))
        self.down_seq += len(data)


def test_a_segment_is_its_ports_sequence_and_payload_without_link_padding() -> None:
    assert tcp_segment(frame(40000, SERVER, 7, b"hello", padding=bytes(6))) == (40000, SERVER, 7, b"hello")
    assert tcp_segment(frame(40000, SERVER, 7, b"")) == (40000, SERVER, 7, b"")
    ipv6 = bytearray(frame(1, 2, 3, b"x"))
    ipv6[12:14] = b"\x86\xdd"
    assert tcp_segment(bytes(ipv6)) is None


def test_ttft_runs_from_the_request_first_segment_to_the_segment_that_completed_the_first_output() -> None:
    wire = Wire(40000)
    whole = request()
    wire.up(100, whole[:20])  # the request's head written in two segments
    wire.up(105, whole[20:])
    wire.down(200, head("7"))
    wire.down(210, chunk({"role": "assistant", "content": ""}))  # role only: not output
    first = chunk({"content": "Hi"})
    wire.down(300, first[:25])  # the first output's line is split across segments
    wire.down(310, first[25:] + chunk({"content": " there"}))
    wire.down(400, END)
    (found,), broken = reconstruct(wire.frames, SERVER)
    assert broken == 0
    assert (found.request_id, found.index, found.sent_ns, found.first_output_ns) == ("7", 0, 100, 310)
    assert found.ttft_ns == 210


def test_requests_on_one_connection_pair_with_responses_in_order_and_retransmissions_are_ignored() -> None:
    wire = Wire(40001)
    for n, start in enumerate((1000, 2000)):
        wire.up(start, request())
        wire.down(start + 50, head(str(n + 1)) + chunk({"role": "assistant", "content": "a"}))
        wire.frames.append((start + 60, wire.frames[-1][1]))  # the same segment again
        wire.down(start + 70, chunk({"content": "b"}) + END)
    requests, broken = reconstruct(wire.frames, SERVER)
    assert broken == 0
    assert [(r.request_id, r.index, r.ttft_ns) for r in requests] == [("1", 0, 50), ("2", 1, 50)]


def test_an_error_answer_with_a_content_length_is_framed_and_has_no_first_token() -> None:
    wire = Wire(40002)
    wire.up(10, request())
    body = b'{"error":"busy"}'
    wire.down(20, b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: %d\r\nX-Request-Id: 3\r\n\r\n" % len(body))
    wire.down(21, body)
    wire.up(30, request())
    wire.down(40, head("4") + chunk({"content": "x"}) + END)
    requests, _ = reconstruct(wire.frames, SERVER)
    assert [(r.request_id, r.ttft_ns) for r in requests] == [("3", None), ("4", 10)]


def test_a_gap_in_the_capture_drops_the_connection_from_there_and_is_counted() -> None:
    wire, other = Wire(40003), Wire(40004)
    wire.up(10, request())
    wire.down(20, head("5") + chunk({"content": "x"}) + END)
    wire.up(30, request())
    wire.down_seq += 100  # bytes the capture lost
    wire.down(40, head("6") + chunk({"content": "y"}) + END)
    other.up(50, request())
    other.down(60, head("8") + chunk({"content": "z"}) + END)
    requests, broken = reconstruct(wire.frames + other.frames, SERVER)
    assert broken == 1
    assert [(r.request_id, r.ttft_ns) for r in requests] == [("5", 10), ("8", 10)]
