"""Kernel receive timestamps: when a read's bytes reached this host, not when the loop got to them.

With hundreds of streams in one gevent process, a chunk waits in the socket until the loop runs
its greenlet, milliseconds after it arrived. On Linux the kernel stamps every TCP segment as it
enters the host (``SO_TIMESTAMPNS``, software receive time, ``CLOCK_REALTIME``), and ``recvmsg``
returns the stamp of the last segment that read consumed as ancillary data. :class:`StampedSocket`
reads that way and keeps, per read, the moment the read returned and the stamp, moved onto the
``perf_counter_ns`` timeline; :class:`StampedHTTPClient` gives its connections such sockets.

Limits, each falling back to the client clock at the read (:func:`chunk_time_ns`): no stamp where
the option is missing (not Linux) or the read bypasses ``recv`` (TLS: OpenSSL reads the socket
itself); a stamp later than its read, more than :data:`MAX_AGE_NS` before it, or before the send,
is distrusted (a clock step). A read returns the stamp of the newest segment it took, so when the
reader fell behind and several segments waited, each read first peeks one byte for the stamp of the
oldest: the first line the read completes gets that one, later ones the newest. But Linux often
merges segments waiting unread in a socket under the newest one's stamp (``tcp_try_coalesce``), and
then the peek sees that stamp too: what came when is lost. So a chunk read together with a later one
is timed at or after its arrival, by up to the gap between them, and the client lists it as late
(:mod:`loadgen.clients`).

The same client times the send: each socket records when it was made and when its last write
started, so a request's clock starts at its write (:func:`send_time_ns`), or before the connect
when it opened the connection; and it checks a pooled connection without yielding to other
greenlets (:func:`idle_and_open`), so that write follows at once.
"""

from __future__ import annotations

import functools
import select
import socket
import struct
import sys
import time
from dataclasses import dataclass
from typing import Any

import gevent.monkey
import gevent.socket
from geventhttpclient import HTTPClient

# SO_TIMESTAMPNS (SO_TIMESTAMPNS_OLD, equal to SCM_TIMESTAMPNS) from Linux <asm-generic/socket.h>;
# Python's socket module does not define it. Other systems use 35 for something else.
SO_TIMESTAMPNS = 35
STAMPS_SUPPORTED = sys.platform.startswith("linux")
MAX_AGE_NS = 1_000_000_000
_TIMESPEC = struct.Struct("@ll")  # struct timespec: tv_sec, tv_nsec as C longs
_ANCILLARY_BYTES = socket.CMSG_SPACE(_TIMESPEC.size) if STAMPS_SUPPORTED else 0
_CLOCK_PAIR_MAX_NS = 20_000
_poll = gevent.monkey.get_original("select", "poll")


@dataclass
class ReadStamps:
    """The last read of a connection: when it returned, and when the kernel received its bytes; and
    when its socket was made and last written to.

    All on the ``perf_counter_ns`` timeline; a stamp is None when the read carried none.
    """

    opened_ns: int = 0
    """When the connection's socket was made, before its connect."""
    sent_ns: int = 0
    """When the last write started: for a request, the moment it was handed to the kernel."""
    read_ns: int = 0
    received_ns: int | None = None
    """Arrival of the newest segment the read took."""
    first_received_ns: int | None = None
    """Arrival of the oldest segment the read took (the same segment when it took one)."""
    ends_line: bool = True
    """The read's bytes ended with a newline: it took no part of a line still to come."""
    received_bytes: int = 0
    """Bytes read so far on the connections: whether any byte of a response came since a send."""


def kernel_stamp_ns(ancdata: list[tuple[int, int, bytes]]) -> int | None:
    """The ``SCM_TIMESTAMPNS`` stamp in a ``recvmsg`` result's ancillary data, as realtime ns."""
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            sec, nsec = _TIMESPEC.unpack_from(data)
            return sec * 1_000_000_000 + nsec
    return None


def realtime_minus_perf_ns() -> tuple[int, int]:
    """``(perf_counter_ns now, CLOCK_REALTIME - perf_counter_ns)``, the two clocks read back to back.

    Retried when the pair straddles a preemption, so the offset is good to a few microseconds.
    """
    for _ in range(3):
        before = time.perf_counter_ns()
        wall = time.time_ns()
        after = time.perf_counter_ns()
        if after - before < _CLOCK_PAIR_MAX_NS:
            break
    return before, wall - (before + after) // 2


def send_time_ns(stamps: ReadStamps, called_ns: int) -> int:
    """When a request made at ``called_ns`` went out: its write, on a connection it found open.

    ``called_ns`` itself when the request opened its connection (the connect counts, as TTFT's
    definition has it) or no write since is known.
    """
    if stamps.opened_ns >= called_ns or stamps.sent_ns < called_ns:
        return called_ns
    return stamps.sent_ns


def chunk_time_ns(stamps: ReadStamps, sent_ns: int, now_ns: int, oldest: bool = False) -> int:
    """When a chunk arrived, on the ``perf_counter_ns`` timeline; never before ``sent_ns``.

    The chunk is one completed by the connection's last read: the first line it completed when
    ``oldest`` (its end lies in the oldest segment the read took), else a later one. Its time is
    the kernel receive stamp of that segment when one is plausible: not later than the read, not
    more than :data:`MAX_AGE_NS` before it, not before the send. Otherwise the time the read
    returned; and ``now_ns`` (the caller's clock) when no read since the send is known.
    """
    if stamps.read_ns < sent_ns:
        return now_ns
    received_ns = stamps.received_ns
    if oldest and stamps.first_received_ns is not None:
        received_ns = stamps.first_received_ns
    if received_ns is None or received_ns > stamps.read_ns:
        return stamps.read_ns
    if received_ns < sent_ns or stamps.read_ns - received_ns > MAX_AGE_NS:
        return stamps.read_ns
    return received_ns


class StampedSocket(gevent.socket.socket):
    """A cooperative TCP socket whose ``recv`` and ``recv_into`` record each read in ``stamps``.

    Reads go through gevent's ``recvmsg``, which waits on the loop like ``recv``. Where the kernel
    refuses the option, reads are plain and record only the time they returned.
    """

    def __init__(
        self, stamps: ReadStamps, family: int = -1, kind: int = -1, proto: int = -1, fileno: int | None = None
    ) -> None:
        super().__init__(family, kind, proto, fileno)
        self.stamps = stamps
        stamps.opened_ns = time.perf_counter_ns()
        self._drained = False
        self.kernel_stamps = False
        if STAMPS_SUPPORTED:
            try:
                self.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                self.kernel_stamps = True
            except OSError:
                pass

    def sendall(self, data: Any, flags: int = 0) -> None:
        self.stamps.sent_ns = time.perf_counter_ns()
        super().sendall(data, flags)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if not self.kernel_stamps:
            data: bytes = super().recv(bufsize, flags)
            self.stamps.received_bytes += len(data)
            self._record(None)
            self.stamps.ends_line = data[-1:] == b"\n"
            return data
        first = self._oldest_stamp(flags)
        data, ancdata, _, _ = self.recvmsg(bufsize, _ANCILLARY_BYTES, flags)
        self.stamps.received_bytes += len(data)
        self._drained = 0 < len(data) < bufsize
        self._record(kernel_stamp_ns(ancdata), first)
        self.stamps.ends_line = data[-1:] == b"\n"
        return data

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        if not self.kernel_stamps:
            count: int = super().recv_into(buffer, nbytes, flags)
            self.stamps.received_bytes += count
            self._record(None)
            self.stamps.ends_line = count > 0 and memoryview(buffer)[count - 1] == 10
            return count
        view = memoryview(buffer)
        size = nbytes or len(view)
        first = self._oldest_stamp(flags)
        count, ancdata, _, _ = self.recvmsg_into([view[:size]], _ANCILLARY_BYTES, flags)
        self.stamps.received_bytes += count
        self._drained = 0 < count < size
        self._record(kernel_stamp_ns(ancdata), first)
        self.stamps.ends_line = count > 0 and view[count - 1] == 10
        return count

    def _oldest_stamp(self, flags: int) -> int | None:
        """Wait for data, then peek one byte: the stamp of the oldest segment waiting (realtime ns).

        After a read that emptied the socket it waits before trying: gevent's ``recvmsg`` tries first
        and waits on EWOULDBLOCK, and a streamed chunk has not arrived yet when its read starts, so
        that try would fail every time (a wasted system call and exception per chunk).
        """
        if self._drained and self.timeout != 0.0:
            self._wait(self._read_event)
        _, ancdata, _, _ = self.recvmsg(1, _ANCILLARY_BYTES, flags | socket.MSG_PEEK)
        return kernel_stamp_ns(ancdata)

    def _record(self, realtime_ns: int | None, first_realtime_ns: int | None = None) -> None:
        read_ns, offset_ns = realtime_minus_perf_ns()
        self.stamps.read_ns = read_ns
        self.stamps.received_ns = None if realtime_ns is None else realtime_ns - offset_ns
        self.stamps.first_received_ns = self.stamps.received_ns
        if first_realtime_ns is not None and realtime_ns is not None and first_realtime_ns <= realtime_ns:
            self.stamps.first_received_ns = first_realtime_ns - offset_ns


class StampedHTTPClient(HTTPClient):
    """An ``HTTPClient`` whose plain-TCP connections are :class:`StampedSocket`\\ s sharing ``stamps``,
    and whose pool checks an idle connection without yielding (:func:`idle_and_open`).

    ``stamps`` describes the last read of any of its connections, so it is meaningful for one
    request at a time: use ``concurrency=1``, as each Locust user does. TLS connections keep
    plain sockets (OpenSSL reads them itself), so ``stamps`` stays empty and the clients fall back.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stamps = ReadStamps()
        self.connects = 0
        """Connections this client has tried to open: a request that leaves it unchanged used a pooled one."""
        pool = self._connection_pool
        # Instance attributes over the pool's hooks, so no self is passed to them.
        pool._is_socket_alive = idle_and_open  # type: ignore[method-assign]  # an instance hook over the pool's method
        create_socket = pool._create_socket

        def counted_create_socket() -> Any:
            self.connects += 1
            return create_socket()

        pool._create_socket = counted_create_socket  # type: ignore[method-assign]  # an instance hook over the pool's method
        if not self.ssl:
            stamped_socket = functools.partial(StampedSocket, self.stamps)
            pool._create_tcp_socket = stamped_socket  # type: ignore[method-assign]  # an instance hook over the pool's method


def idle_and_open(sock: Any) -> bool:
    """Whether a pooled keep-alive connection is usable: open, and nothing (a FIN, stray bytes) to read.

    geventhttpclient's own check calls gevent's ``select`` with a zero timeout, which yields to every
    other ready greenlet: the request's clock had started, and its send waited behind them (ms at
    200 streams). The real ``poll`` with a zero timeout answers at once and blocks nothing (and,
    unlike ``select``, takes descriptors past 1,023, which a process with over a thousand users has).
    """
    if sock is None:
        return False
    try:
        fd = sock.fileno()
        if fd < 0:
            return False
        poller = _poll()
        poller.register(fd, select.POLLIN)
        return not poller.poll(0)  # readable (bytes or a FIN), hung up or in error: not reusable
    except (OSError, ValueError):
        return False
