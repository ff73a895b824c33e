"""Binary byte channels for the SerialEMCCD socket: exact-length reads over a plain TCP socket or a
VISA TCPIP SOCKET resource.

The camera protocol needs what a text transport does not give: raw bytes with no termination
character, reads of an exact byte count (gs §3.3), reads straight into a preallocated buffer so a
2048 x 2048 frame is not copied chunk by chunk, and a timeout that can change per call (an
exposure may run far longer than a status query). `socket` and pyvisa give the primitives; the
exact-length loop on top is a few lines, written here.

Resource strings:
* `gif://host:port` (or `gif://host`, port 48890) -> `SocketChannel` (plain socket, fastest)
* `TCPIP0::host::48890::SOCKET`                  -> `VisaChannel` (pyvisa, default backend `@py`)
"""

from __future__ import annotations

import re
import socket
from typing import Protocol

from insitem.drivers.errors import CommunicationError, DeviceTimeoutError, ResourceError

DEFAULT_PORT = 48890  # gs §1: the value of SERIALEMCCD_PORT in SerialEM's setup instructions


class ConnectionClosedError(CommunicationError):
    """The peer closed the connection; `received_bytes` of the read had arrived before."""

    def __init__(self, message: str, resource: str | None = None, received_bytes: int = 0) -> None:
        self.received_bytes = received_bytes
        super().__init__(message, resource)


class BinaryChannel(Protocol):
    """What the GIF client needs from a byte stream."""

    resource: str

    @property
    def is_open(self) -> bool: ...

    def open(self) -> None: ...

    def close(self) -> None: ...

    def set_timeout(self, timeout_s: float) -> None: ...

    def write(self, data: bytes) -> None: ...

    def read_exact(self, n: int) -> bytes: ...

    def read_into(self, buffer: memoryview) -> None:
        """Fill `buffer` completely (exact-length read)."""
        ...


class SocketChannel:
    """Plain TCP socket with TCP_NODELAY (design §5: no 40 ms Nagle/delayed-ACK stalls)."""

    def __init__(self, host: str, port: int = DEFAULT_PORT, timeout_s: float = 10.0,
                 connect_timeout_s: float = 5.0) -> None:
        self.host = host
        self.port = port
        self.resource = f"gif://{host}:{port}"
        self._timeout_s = timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._sock: socket.socket | None = None

    @property
    def is_open(self) -> bool:
        return self._sock is not None

    def open(self) -> None:
        self.close()
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self._connect_timeout_s)
        except OSError as exc:
            raise CommunicationError(f"cannot connect: {exc}", self.resource) from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(self._timeout_s)
        self._sock = sock

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def set_timeout(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        if self._sock is not None:
            self._sock.settimeout(timeout_s)

    def _require(self) -> socket.socket:
        if self._sock is None:
            raise CommunicationError("channel is not open", self.resource)
        return self._sock

    def write(self, data: bytes) -> None:
        sock = self._require()
        try:
            sock.sendall(data)
        except TimeoutError as exc:
            raise DeviceTimeoutError(f"send timed out after {self._timeout_s} s", self.resource) from exc
        except OSError as exc:
            raise CommunicationError(f"send failed: {exc}", self.resource) from exc

    def read_into(self, buffer: memoryview) -> None:
        sock = self._require()
        view = buffer.cast("B") if buffer.format != "B" else buffer
        got, n = 0, len(view)
        try:
            while got < n:
                k = sock.recv_into(view[got:], n - got)
                if k == 0:
                    raise ConnectionClosedError(
                        f"connection closed by the server after {got} of {n} bytes", self.resource, got
                    )
                got += k
        except TimeoutError as exc:
            raise DeviceTimeoutError(
                f"no data for {self._timeout_s} s ({got} of {n} bytes read)", self.resource
            ) from exc
        except ConnectionResetError as exc:
            raise ConnectionClosedError(f"connection reset: {exc}", self.resource, got) from exc
        except OSError as exc:
            raise CommunicationError(f"receive failed: {exc}", self.resource) from exc

    def read_exact(self, n: int) -> bytes:
        buf = bytearray(n)
        self.read_into(memoryview(buf))
        return bytes(buf)


class VisaChannel:
    """A VISA TCPIP SOCKET resource used for raw binary I/O (termination characters off)."""

    def __init__(self, resource: str, timeout_s: float = 10.0, visa_library: str = "@py") -> None:
        self.resource = resource
        self._timeout_s = timeout_s
        self._visa_library = visa_library
        self._rm = None
        self._inst = None

    @property
    def is_open(self) -> bool:
        return self._inst is not None

    def open(self) -> None:
        import pyvisa  # imported here so the plain-socket path never needs a VISA library

        self.close()
        try:
            if self._rm is None:
                self._rm = pyvisa.ResourceManager(self._visa_library)
            inst = self._rm.open_resource(self.resource)
        except Exception as exc:  # pyvisa raises several unrelated types for unreachable hosts
            raise CommunicationError(f"cannot open: {exc}", self.resource) from exc
        inst.read_termination = None
        inst.write_termination = None
        inst.timeout = self._timeout_s * 1000.0
        inst.chunk_size = 1 << 20
        # pyvisa-py's TCPIP SOCKET session receives in 4096-byte pieces with a select() before
        # each; a larger piece lifts a 2048^2 frame from ~100-190 MB/s to the socket's speed on
        # loopback (bench/bench_gif_transfer.py). Only applied when that session attribute exists.
        session = getattr(getattr(inst, "visalib", None), "sessions", {}).get(inst.session)
        if session is not None and hasattr(session, "max_recv_size"):
            session.max_recv_size = max(session.max_recv_size, 1 << 20)
        self._inst = inst

    def close(self) -> None:
        if self._inst is not None:
            try:
                self._inst.close()
            except Exception:  # noqa: BLE001 - closing a broken session is best effort
                pass
            finally:
                self._inst = None

    def set_timeout(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        if self._inst is not None:
            self._inst.timeout = timeout_s * 1000.0

    def _require(self):  # noqa: ANN202 - pyvisa resource type
        if self._inst is None:
            raise CommunicationError("channel is not open", self.resource)
        return self._inst

    def write(self, data: bytes) -> None:
        import pyvisa

        try:
            self._require().write_raw(bytes(data))
        except pyvisa.errors.VisaIOError as exc:
            if exc.error_code == pyvisa.constants.StatusCode.error_timeout:
                raise DeviceTimeoutError("write timed out", self.resource) from exc
            raise CommunicationError(f"write failed: {exc}", self.resource) from exc
        except OSError as exc:
            raise CommunicationError(f"write failed: {exc}", self.resource) from exc

    def read_exact(self, n: int) -> bytes:
        import pyvisa

        inst = self._require()
        try:
            data = inst.read_bytes(n, break_on_termchar=False)
        except pyvisa.errors.VisaIOError as exc:
            if exc.error_code == pyvisa.constants.StatusCode.error_timeout:
                if self._peer_closed():
                    raise ConnectionClosedError("connection closed by the server", self.resource) from exc
                raise DeviceTimeoutError(f"no data for {self._timeout_s} s", self.resource) from exc
            raise CommunicationError(f"read failed: {exc}", self.resource) from exc
        except OSError as exc:
            raise CommunicationError(f"read failed: {exc}", self.resource) from exc
        if len(data) != n:
            raise CommunicationError(f"short read: {len(data)} of {n} bytes", self.resource)
        return data

    def read_into(self, buffer: memoryview) -> None:
        view = buffer.cast("B") if buffer.format != "B" else buffer
        view[:] = self.read_exact(len(view))

    def _peer_closed(self) -> bool:
        """After a timeout: did the server close the socket? (`visa_socket_closed`)"""
        from insitem.drivers.transport import visa_socket_closed  # imports pyvisa, as this channel does

        return visa_socket_closed(self._rm, self._inst)


_VISA_SOCKET = re.compile(r"^TCPIP\d*::(?P<host>[^:]+)::(?P<port>\d+)::SOCKET$", re.IGNORECASE)
_GIF_URL = re.compile(r"^gif://(?P<host>\[[^\]]+\]|[^:/]+)(?::(?P<port>\d+))?/?$", re.IGNORECASE)


def open_channel(resource: str, timeout_s: float = 10.0, connect_timeout_s: float = 5.0,
                 visa_library: str = "@py") -> BinaryChannel:
    """Channel (not yet opened) for a resource string; see the module docstring."""
    m = _GIF_URL.match(resource)
    if m:
        port = int(m.group("port") or DEFAULT_PORT)
        if not 0 < port < 65536:
            raise ResourceError(f"{resource}: port {port} out of range")
        return SocketChannel(m.group("host").strip("[]"), port, timeout_s, connect_timeout_s)
    if _VISA_SOCKET.match(resource):
        return VisaChannel(resource, timeout_s, visa_library)
    raise ResourceError(
        f"{resource!r} is not a GIF camera resource; use gif://host:port or TCPIP0::host::48890::SOCKET"
    )

