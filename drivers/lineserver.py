"""Line-based servers for text command sets: loopback TCP and pseudo-terminal serial pairs.

One implementation for every server that speaks lines: the TEM bridge on the microscope PC
(`insitem.drivers.tem.bridge.TemServer`) and the emulated instruments
(`insitem.simulators.emulators`, which re-exports these names).

* `LineServer` - TCP: binds 127.0.0.1 by default, port 0 picks a free port (read back in
  `.port`), `TCP_NODELAY` on every client socket and on Linux `TCP_QUICKACK` re-armed after each
  read (design.md §5 "Socket latency": otherwise pyvisa-py clients stall ~40 ms per query), one
  thread per client, malformed input answered with an instrument error and never a crash,
  nothing received is ever eval'd or unpickled. `start()` serves in the background,
  `serve_forever()` in the calling thread.
* `PtyServer` - the same over `os.openpty()`: the client opens `.slave_path` with pyserial
  (``serial:///dev/pts/N``) or VISA (``ASRL/dev/pts/N::INSTR``). POSIX only: `tty`/`termios`
  are imported when a `PtyServer` is built, so this module (and the TEM bridge on a Windows
  microscope PC) imports without them; elsewhere building one raises a clear RuntimeError.
* `Faults` - transport fault injection on request: latency, timeout (no answer), dropped
  connection, garbled reply, truncated reply (off unless armed).

An instrument is any object with ``handle(line: str) -> str | None`` (the response to one
received line, or None) and optionally ``push_error(code, message)`` - the servers serialise
calls to it with one lock, so its state is shared by every client as on a real instrument.

An instrument that needs to know *which* connection sent a line (the TEM beam lease and token,
`insitem.drivers.tem.session`) also provides ``open_session(peer: str) -> session``,
``handle_session(session, line)`` and ``close_session(session)``: the TCP server opens one
session per connection and closes it when the connection ends, however it ends; the
pseudo-terminal server opens one session for the line's lifetime.
"""

from __future__ import annotations

import os
import select
import socket
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

MAX_LINE_BYTES = 1 << 20  # a line longer than this is dropped with -363 Input buffer overrun


class LineInstrument(Protocol):
    def handle(self, line: str) -> str | None: ...


def _open_session(instrument: Any, peer: str) -> Any:
    """The instrument's session for a new connection, or None when it keeps none."""
    opener = getattr(instrument, "open_session", None)
    return opener(peer) if opener is not None else None


def _close_session(instrument: Any, session: Any) -> None:
    if session is not None:
        instrument.close_session(session)


# ---------------------------------------------------------------------------------------------
# Fault injection


@dataclass
class Faults:
    """Counters of pending faults; each reply consumes one of the first non-zero kind.

    `latency_s` applies to every reply while set. Thread-safe through the server lock.
    """

    latency_s: float = 0.0
    timeout: int = 0  # swallow the next N replies (client sees a timeout)
    drop: int = 0  # close the connection instead of the next N replies (TCP only)
    garble: int = 0  # replace the next N replies by non-text bytes
    truncate: int = 0  # send only the first half of the next N replies (with terminator)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def inject(self, kind: str, count: int = 1) -> None:
        """Arm `count` faults of `kind` ('timeout', 'drop', 'garble', 'truncate')."""
        if kind not in ("timeout", "drop", "garble", "truncate"):
            raise ValueError(f"unknown fault {kind!r}; expected timeout, drop, garble or truncate")
        with self._lock:
            setattr(self, kind, getattr(self, kind) + count)

    def clear(self) -> None:
        with self._lock:
            self.latency_s = 0.0
            self.timeout = self.drop = self.garble = self.truncate = 0

    def take(self) -> str | None:
        """The fault to apply to the reply about to be sent, or None."""
        with self._lock:
            for kind in ("drop", "timeout", "garble", "truncate"):
                n = getattr(self, kind)
                if n > 0:
                    setattr(self, kind, n - 1)
                    return kind
        return None


GARBLED = b"\xff\xfe#\x8f\x00garbled\x9c"


# ---------------------------------------------------------------------------------------------
# Servers


class _BaseServer:
    def __init__(self, instrument: LineInstrument, termination: bytes = b"\n") -> None:
        self.instrument = instrument
        self.termination = termination
        self.faults = Faults()
        self._lock = threading.Lock()  # one instrument, many clients
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _respond(self, line: bytes, session: Any = None) -> tuple[bytes | None, str | None]:
        """Run one received line (from `session`, when the instrument keeps sessions); return
        (bytes to send or None, fault applied or None)."""
        try:
            text = line.decode("ascii").strip("\r")
        except UnicodeDecodeError:
            text = None
        with self._lock:
            if text is None:
                reply = self._error_line(-102, "Syntax error; non-ASCII input")
            else:
                try:
                    if session is None:
                        reply = self.instrument.handle(text)
                    else:
                        reply = self.instrument.handle_session(session, text)  # type: ignore[attr-defined]
                except Exception as exc:  # noqa: BLE001 - malformed input must never kill the server
                    reply = self._error_line(-200, f"Execution error; {type(exc).__name__}")
        if reply is None:
            return None, None
        if self.faults.latency_s > 0:
            self._stop.wait(self.faults.latency_s)
        fault = self.faults.take()
        data = reply.encode("ascii", "replace") + self.termination
        if fault == "timeout":
            return None, fault
        if fault == "garble":
            return GARBLED + self.termination, fault
        if fault == "truncate":
            return reply.encode("ascii", "replace")[: max(1, len(reply) // 2)] + self.termination, fault
        return data, fault

    def _error_line(self, code: int, message: str) -> None:
        push = getattr(self.instrument, "push_error", None)
        if push is not None:
            push(code, message)
        return None

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        t.start()
        self._threads.append(t)
        self._threads = [t for t in self._threads if t.is_alive()]


class LineServer(_BaseServer):
    """TCP line server for one instrument. Use as a context manager or call start()/stop()."""

    def __init__(
        self,
        instrument: LineInstrument,
        host: str = "127.0.0.1",
        port: int = 0,
        termination: bytes = b"\n",
    ) -> None:
        super().__init__(instrument, termination)
        self.host = host
        self._sock = socket.create_server((host, port), reuse_port=False)
        self._sock.settimeout(0.2)  # here, not in the loop: stop() may close the socket before the loop runs
        self.port: int = self._sock.getsockname()[1]
        self._clients: set[socket.socket] = set()

    @property
    def resource_string(self) -> str:
        """VISA resource for a raw-socket client."""
        return f"TCPIP0::{self.host}::{self.port}::SOCKET"

    def start(self) -> "LineServer":
        """Serve in a background thread; returns at once."""
        self._spawn(self._accept_loop)
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until `stop()` (from another thread or a signal handler)."""
        self._accept_loop()

    def stop(self) -> None:
        self._stop.set()
        try:
            self._sock.close()
        except OSError:
            pass
        for c in list(self._clients):
            _close_quietly(c)
        for t in self._threads:
            t.join(timeout=1.0)

    def __enter__(self) -> "LineServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def drop_clients(self) -> None:
        """Close every client connection now (the server keeps listening)."""
        for c in list(self._clients):
            _close_quietly(c)

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._clients.add(conn)
            self._spawn(self._serve_client, conn, _peer_text(conn))

    def _serve_client(self, conn: socket.socket, peer: str = "") -> None:
        quickack = getattr(socket, "TCP_QUICKACK", None) if sys.platform.startswith("linux") else None
        lines = _LineSplitter(self.termination)
        session = _open_session(self.instrument, peer)
        try:
            while not self._stop.is_set():
                try:
                    chunk = conn.recv(65536)
                except OSError:
                    return
                if not chunk:
                    return
                if quickack is not None:
                    try:  # re-armed after every read: Linux clears it on its own
                        conn.setsockopt(socket.IPPROTO_TCP, quickack, 1)
                    except OSError:
                        pass
                for line in lines.feed(chunk):
                    if line is None:
                        self._error_line(-363, "Input buffer overrun")
                        continue
                    data, fault = self._respond(line, session)
                    if fault == "drop":
                        return
                    if data is not None:
                        conn.sendall(data)
        except OSError:
            return
        finally:
            self._clients.discard(conn)
            _close_quietly(conn)
            _close_session(self.instrument, session)


class PtyServer(_BaseServer):
    """Serial-line server on a pseudo-terminal pair; the client opens `slave_path`.

    The slave side is put in raw mode (no echo, no line editing) and kept open by the server,
    so a client closing and reopening the port does not end the session. A 'drop' fault cannot
    cut a serial line: it is treated as a timeout (no answer).
    """

    def __init__(self, instrument: LineInstrument, termination: bytes = b"\n") -> None:
        super().__init__(instrument, termination)
        try:
            import tty  # POSIX only (termios)
        except ImportError:
            raise RuntimeError(
                "serial emulation over a pseudo-terminal needs a POSIX system (pty/termios); "
                "use TCP here (LineServer), or a real serial port"
            ) from None
        self._master, self._slave = os.openpty()
        os.set_blocking(self._master, False)  # replies wait in select, so stop() is never stuck in a write
        tty.setraw(self._slave)
        self.slave_path: str = os.ttyname(self._slave)
        self._session = _open_session(instrument, self.slave_path)

    @property
    def resource_string(self) -> str:
        """pyserial resource for the client end."""
        return f"serial://{self.slave_path}?baud=9600"

    @property
    def visa_resource_string(self) -> str:
        """VISA ASRL resource for the client end (pyvisa-py opens it through pyserial)."""
        return f"ASRL{self.slave_path}::INSTR"

    def start(self) -> "PtyServer":
        self._spawn(self._serve)
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=1.0)
        session, self._session = self._session, None
        _close_session(self.instrument, session)
        for fd in (self._master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> "PtyServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self) -> None:
        lines = _LineSplitter(self.termination)
        while not self._stop.is_set():
            ready, _, _ = select.select([self._master], [], [], 0.1)
            if not ready:
                continue
            try:
                chunk = os.read(self._master, 65536)
            except OSError:
                self._stop.wait(0.05)
                continue
            for line in lines.feed(chunk):
                if line is None:
                    self._error_line(-363, "Input buffer overrun")
                    continue
                data, _ = self._respond(line, self._session)
                if data is not None:
                    self._write(data)

    def _write(self, data: bytes) -> None:
        """Write a reply; while the client does not read (the line is full) wait, but give up
        at stop() instead of blocking in os.write for ever."""
        view = memoryview(data)
        while view and not self._stop.is_set():
            _, writable, _ = select.select([], [self._master], [], 0.1)
            if not writable:
                continue
            try:
                view = view[os.write(self._master, view):]
            except BlockingIOError:
                continue
            except OSError:
                return


class _LineSplitter:
    """Cuts a byte stream into lines at `termination`.

    A line longer than MAX_LINE_BYTES is dropped whole: `feed` yields None for it once (the
    caller queues -363 Input buffer overrun), as soon as the limit is passed, and the rest of
    that line up to its terminator is discarded - never parsed as a command of its own. The
    result does not depend on how the stream was cut into chunks.
    """

    def __init__(self, termination: bytes) -> None:
        self.termination = termination
        self._buf = bytearray()
        self._overrun = False  # inside a line already reported as too long

    def feed(self, chunk: bytes) -> list[bytes | None]:
        out: list[bytes | None] = []
        self._buf += chunk
        term = self.termination
        start = 0
        while (end := self._buf.find(term, start)) >= 0:
            if self._overrun:
                self._overrun = False
            elif end - start > MAX_LINE_BYTES:
                out.append(None)
            else:
                out.append(bytes(self._buf[start:end]))
            start = end + len(term)
        del self._buf[:start]
        if len(self._buf) > MAX_LINE_BYTES:
            if not self._overrun:
                out.append(None)
            self._overrun = True
            self._buf.clear()
        return out


def _peer_text(conn: socket.socket) -> str:
    try:
        host, port = conn.getpeername()[:2]
    except OSError:
        return "?"
    return f"{host}:{port}"


def _close_quietly(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass
