"""Transports: one small interface over VISA (pyvisa / pyvisa-py) and pyserial.

Resource strings
----------------
* VISA: anything `pyvisa.rname` accepts - ``GPIB0::24::INSTR``, ``ASRL/dev/ttyUSB0::INSTR``,
  ``ASRL1::INSTR``, ``TCPIP0::192.168.1.50::5025::SOCKET``, ``TCPIP::host::INSTR``,
  ``USB0::0x05E6::0x2450::04096331::INSTR``. Opened through ``pyvisa.ResourceManager(backend)``;
  the default backend ``"@py"`` is pyvisa-py (no NI-VISA needed).
* Serial without VISA: ``serial:///dev/ttyUSB0?baud=9600&bits=8&parity=N&stop=1`` (only the
  path is required; defaults 9600 8N1, the Keithley 2400 factory setting, physics.md §4.2),
  opened with pyserial.

Anything else raises `ResourceError` naming the string and the forms expected.

Retry / reconnect policy (the same for every transport)
-------------------------------------------------------
* A **timeout** raises `DeviceTimeoutError` at once; nothing is re-sent (a repeated ``:READ?``
  would take a second reading, a repeated ``:INIT`` a second sweep). The transport marks itself
  *stale*: before the next operation it discards whatever late reply may still arrive (VISA
  ``clear()`` / serial input flush, or a reconnect for sockets), so a late answer is never taken
  for the answer to the next query.
* A **dropped connection** (peer closed, connection reset, broken pipe, device gone) triggers
  exactly one reconnect and one re-send of the same write or query; if that fails too,
  `CommunicationError` is raised. Callers that must not repeat a command pass ``retry=False``.
* Undecodable bytes in a text reply raise `CommunicationError` (garbled line).

Hand-written because pyvisa and pyserial each cover one half; the two share this one surface so
the camera, TEM and potentiostat drivers take either.
"""

from __future__ import annotations

import abc
import socket
import urllib.parse
from typing import Any

import pyvisa
import pyvisa.constants
import pyvisa.errors

from insitem.drivers.errors import CommunicationError, DeviceTimeoutError, ResourceError

DEFAULT_TIMEOUT_S = 2.0
SERIAL_PREFIX = "serial://"


class Transport(abc.ABC):
    """Text lines and raw bytes to and from one instrument."""

    def __init__(
        self,
        resource: str,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        write_termination: str = "\n",
        read_termination: str = "\n",
        encoding: str = "ascii",
    ) -> None:
        self.resource = resource
        self.timeout_s = timeout_s
        self.write_termination = write_termination
        self.read_termination = read_termination
        self.encoding = encoding
        self._stale = False

    # -- to implement ---------------------------------------------------------------------------
    @abc.abstractmethod
    def open(self) -> None:
        """(Re)open the connection. Raise CommunicationError naming the resource on failure."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close the connection (idempotent)."""

    @abc.abstractmethod
    def _write_bytes(self, data: bytes) -> None: ...

    @abc.abstractmethod
    def _read_until(self, term: bytes, timeout_s: float) -> bytes:
        """Read up to and including `term`; raise TimeoutError / ConnectionError."""

    @abc.abstractmethod
    def _read_exact(self, n: int, timeout_s: float) -> bytes: ...

    @abc.abstractmethod
    def _discard_input(self) -> None:
        """Throw away anything pending (late replies after a timeout)."""

    # -- public API -------------------------------------------------------------------------------
    def write(self, line: str, *, retry: bool = True) -> None:
        """Send one line (the write termination is appended)."""
        data = (line + self.write_termination).encode(self.encoding)
        self._guarded(lambda: self._write_bytes(data), f"write {line!r}", retry)

    def read_line(self, timeout_s: float | None = None) -> str:
        """Read one line, termination stripped."""
        return self._guarded(lambda: self._decode(self._read_line(timeout_s)), "read", retry=False)

    def query(self, line: str, *, timeout_s: float | None = None, retry: bool = True) -> str:
        """Write one line and read the one-line answer (see the module docstring for retries)."""
        data = (line + self.write_termination).encode(self.encoding)

        def once() -> str:
            self._write_bytes(data)
            return self._decode(self._read_line(timeout_s))

        return self._guarded(once, f"query {line!r}", retry)

    def write_raw(self, data: bytes, *, retry: bool = True) -> None:
        """Send bytes as they are (no termination)."""
        self._guarded(lambda: self._write_bytes(data), f"write {len(data)} bytes", retry)

    def read_raw(self, n: int, timeout_s: float | None = None) -> bytes:
        """Read exactly `n` bytes."""
        t = self.timeout_s if timeout_s is None else timeout_s
        return self._guarded(lambda: self._read_exact(n, t), f"read {n} bytes", retry=False)

    def reconnect(self) -> None:
        """Close and reopen the connection."""
        self.close()
        self.open()
        self._stale = False

    def __enter__(self) -> "Transport":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- shared machinery -----------------------------------------------------------------------------
    def _read_line(self, timeout_s: float | None) -> bytes:
        term = self.read_termination.encode(self.encoding)
        raw = self._read_until(term, self.timeout_s if timeout_s is None else timeout_s)
        return raw[: -len(term)] if term and raw.endswith(term) else raw

    def _decode(self, raw: bytes) -> str:
        try:
            text = raw.decode(self.encoding)
        except UnicodeDecodeError:
            raise CommunicationError(f"garbled reply {raw[:40]!r} (not {self.encoding} text)", self.resource) from None
        return text.rstrip("\r")

    def _guarded(self, action: Any, what: str, retry: bool) -> Any:
        if self._stale:
            self._recover()
        try:
            return action()
        except TimeoutError:
            self._stale = True
            raise DeviceTimeoutError(f"no answer within {self.timeout_s:g} s to {what}", self.resource) from None
        except ConnectionError as exc:
            if not retry:
                self._stale = True
                raise CommunicationError(f"connection lost during {what}: {exc}", self.resource) from None
        # one reconnect, one re-send
        try:
            self.reconnect()
            return action()
        except TimeoutError:
            self._stale = True
            raise DeviceTimeoutError(
                f"no answer within {self.timeout_s:g} s to {what} after reconnecting", self.resource
            ) from None
        except (ConnectionError, CommunicationError) as exc:
            self._stale = True
            raise CommunicationError(f"connection lost during {what}, reconnect failed: {exc}", self.resource) from None

    def _recover(self) -> None:
        try:
            self._discard_input()
        except (ConnectionError, TimeoutError, OSError):
            try:
                self.reconnect()
            except CommunicationError:
                pass  # the operation itself will report
        self._stale = False


# ---------------------------------------------------------------------------------------------
# VISA


class VisaTransport(Transport):
    """pyvisa resource (GPIB, ASRL, TCPIP SOCKET/INSTR, USB). Termination is handled by VISA."""

    def __init__(self, resource: str, *, backend: str = "@py", baud_rate: int | None = None, **kw: Any) -> None:
        super().__init__(resource, **kw)
        self.backend = backend
        self.baud_rate = baud_rate
        self._rm: Any = None
        self._res: Any = None
        self.open()

    def open(self) -> None:
        try:
            if self._rm is None:
                self._rm = pyvisa.ResourceManager(self.backend)
            res = self._rm.open_resource(self.resource)
        except pyvisa.errors.VisaIOError as exc:
            raise CommunicationError(f"cannot open: {exc.description}", self.resource) from None
        except (OSError, ValueError) as exc:
            raise CommunicationError(f"cannot open: {exc}", self.resource) from None
        res.timeout = int(self.timeout_s * 1000)
        res.write_termination = self.write_termination
        res.read_termination = self.read_termination
        res.encoding = self.encoding
        if self.baud_rate is not None and hasattr(res, "baud_rate"):
            res.baud_rate = self.baud_rate
        self._res = res

    def close(self) -> None:
        if self._res is not None:
            try:
                self._res.close()
            except Exception:  # noqa: BLE001 - closing a broken session is best effort
                pass
            self._res = None

    # fast paths: let pyvisa do termination (no second buffer in Python)
    def write(self, line: str, *, retry: bool = True) -> None:
        self._guarded(lambda: self._visa(self._res.write, line), f"write {line!r}", retry)

    def query(self, line: str, *, timeout_s: float | None = None, retry: bool = True) -> str:
        if timeout_s is None:

            def once() -> str:
                res = self._res
                self._visa(res.write, line)
                return self._read_text()

        else:

            def once() -> str:
                res = self._res
                self._visa(res.write, line)
                old = res.timeout
                res.timeout = int(timeout_s * 1000)
                try:
                    return self._read_text()
                finally:
                    res.timeout = old

        return self._guarded(once, f"query {line!r}", retry)

    def read_line(self, timeout_s: float | None = None) -> str:
        return self._guarded(self._read_text, "read", retry=False)

    def _read_text(self) -> str:
        raw = self._visa(self._res.read_raw)
        term = self.read_termination.encode(self.encoding)
        if term and raw.endswith(term):
            raw = raw[: -len(term)]
        return self._decode(raw)

    def _visa(self, fn: Any, *args: Any) -> Any:
        if self._res is None:
            raise ConnectionError("not open")
        try:
            return fn(*args)
        except pyvisa.errors.VisaIOError as exc:
            code = exc.error_code
            if code == pyvisa.constants.StatusCode.error_timeout:
                if self._peer_closed():
                    raise ConnectionError("peer closed the connection") from None
                raise TimeoutError(exc.description) from None
            if code in (
                pyvisa.constants.StatusCode.error_connection_lost,
                pyvisa.constants.StatusCode.error_io,
                pyvisa.constants.StatusCode.error_invalid_object,
                pyvisa.constants.StatusCode.error_resource_not_found,
            ):
                raise ConnectionError(exc.description) from None
            raise CommunicationError(f"VISA error {exc.description}", self.resource) from None
        except TimeoutError:
            raise
        except pyvisa.errors.InvalidSession:
            raise ConnectionError("session closed") from None
        except OSError as exc:  # ConnectionResetError, BrokenPipeError, ...
            raise ConnectionError(str(exc)) from None
        except UnicodeDecodeError:
            raise CommunicationError("garbled reply (not text)", self.resource) from None

    def _peer_closed(self) -> bool:
        """After a timeout on a raw socket: did the peer close it? (`visa_socket_closed`)"""
        if not self.resource.upper().endswith("::SOCKET"):
            return False
        return visa_socket_closed(self._rm, self._res)

    def _write_bytes(self, data: bytes) -> None:
        self._visa(self._res.write_raw, data)

    def _read_until(self, term: bytes, timeout_s: float) -> bytes:
        return self._visa(self._res.read_raw)

    def _read_exact(self, n: int, timeout_s: float) -> bytes:
        return self._visa(self._res.read_bytes, n)

    def _discard_input(self) -> None:
        # pyvisa-py sockets do not implement clear(); a fresh connection drops stale replies
        if self.resource.upper().endswith("::SOCKET") or self._res is None:
            self.reconnect()
            return
        try:
            self._res.clear()
        except Exception:  # noqa: BLE001 - not every session supports device clear
            self.reconnect()


# ---------------------------------------------------------------------------------------------
# pyserial


def visa_socket_closed(rm: Any, res: Any) -> bool:
    """After a timeout on VISA resource `res` (a raw socket opened through ResourceManager `rm`):
    did the peer close it? pyvisa-py reports a closed socket as a timeout, so peek at its socket
    (pyvisa-py session internals; any other backend, or a change there, gives False: the timeout
    stays a timeout)."""
    try:
        sock = rm.visalib.sessions[res.session].interface
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    except Exception:  # noqa: BLE001 - not pyvisa-py, or its internals changed
        return False


class SerialTransport(Transport):
    """A serial line through pyserial: ``serial:///dev/ttyUSB0?baud=9600``."""

    def __init__(self, resource: str, **kw: Any) -> None:
        super().__init__(resource, **kw)
        self.port, self.settings = parse_serial_resource(resource)
        self._ser: Any = None
        self.open()

    def open(self) -> None:
        import serial

        try:
            self._ser = serial.Serial(self.port, timeout=self.timeout_s, write_timeout=self.timeout_s, **self.settings)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise CommunicationError(f"cannot open serial port {self.port}: {exc}", self.resource) from None

    def close(self) -> None:
        if self._ser is not None:
            try:
                self._ser.close()
            except Exception:  # noqa: BLE001
                pass
            self._ser = None

    def _port(self) -> Any:
        if self._ser is None:
            raise ConnectionError("not open")
        return self._ser

    def _write_bytes(self, data: bytes) -> None:
        import serial

        try:
            self._port().write(data)
        except serial.SerialTimeoutException:
            raise TimeoutError("write timed out") from None
        except (serial.SerialException, OSError) as exc:
            raise ConnectionError(str(exc)) from None

    def _read_until(self, term: bytes, timeout_s: float) -> bytes:
        import serial

        port = self._port()
        try:
            if timeout_s != port.timeout:
                port.timeout = timeout_s
            raw = port.read_until(term)
        except (serial.SerialException, OSError) as exc:
            raise ConnectionError(str(exc)) from None
        if not raw.endswith(term):
            raise TimeoutError(f"got {raw[:40]!r} without terminator")
        return raw

    def _read_exact(self, n: int, timeout_s: float) -> bytes:
        import serial

        port = self._port()
        try:
            port.timeout = timeout_s
            raw = port.read(n)
        except (serial.SerialException, OSError) as exc:
            raise ConnectionError(str(exc)) from None
        if len(raw) < n:
            raise TimeoutError(f"got {len(raw)} of {n} bytes")
        return raw

    def _discard_input(self) -> None:
        self._port().reset_input_buffer()


def parse_serial_resource(resource: str) -> tuple[str, dict[str, Any]]:
    """``serial:///dev/ttyX?baud=9600&bits=8&parity=N&stop=1`` -> (path, pyserial settings)."""
    url = urllib.parse.urlsplit(resource)
    if url.scheme != "serial" or not url.path or url.netloc:
        raise ResourceError(f"{resource!r}: expected serial:///dev/ttyX?baud=9600")
    query = urllib.parse.parse_qs(url.query)
    allowed = {"baud", "bits", "parity", "stop"}
    unknown = set(query) - allowed
    if unknown:
        raise ResourceError(f"{resource!r}: unknown serial option(s) {sorted(unknown)}; allowed {sorted(allowed)}")
    try:
        settings = {
            "baudrate": int(query.get("baud", ["9600"])[0]),
            "bytesize": int(query.get("bits", ["8"])[0]),
            "parity": query.get("parity", ["N"])[0].upper(),
            "stopbits": float(query.get("stop", ["1"])[0]),
        }
    except ValueError:
        raise ResourceError(f"{resource!r}: baud/bits/stop must be numbers") from None
    if settings["stopbits"] in (1.0, 2.0):
        settings["stopbits"] = int(settings["stopbits"])
    if settings["bytesize"] not in (5, 6, 7, 8) or settings["parity"] not in ("N", "E", "O", "M", "S"):
        raise ResourceError(f"{resource!r}: bits must be 5-8 and parity one of N,E,O,M,S")
    return url.path, settings


def check_resource(resource: str) -> str:
    """Validate a resource string; return its kind ('serial' or the VISA interface type)."""
    if not isinstance(resource, str) or not resource.strip():
        raise ResourceError(f"{resource!r}: empty resource string")
    if resource.startswith(SERIAL_PREFIX):
        parse_serial_resource(resource)
        return "serial"
    from pyvisa import rname

    try:
        parsed = rname.parse_resource_name(resource)
    except rname.InvalidResourceName:
        raise ResourceError(
            f"{resource!r}: not a VISA resource (GPIB0::24::INSTR, ASRL/dev/ttyUSB0::INSTR, "
            "TCPIP0::host::5025::SOCKET, USB0::...::INSTR) nor serial:///dev/ttyX?baud=9600"
        ) from None
    # pyvisa's parser accepts any text in numeric fields; check them here
    numeric = {"board": (0, 999), "primary_address": (0, 30), "secondary_address": (0, 30), "port": (1, 65535)}
    for attr, (lo, hi) in numeric.items():
        value = getattr(parsed, attr, None)
        if value in (None, "") or (attr == "board" and str(parsed.interface_type) == "ASRL"):
            continue
        if not str(value).isdigit() or not lo <= int(value) <= hi:
            raise ResourceError(f"{resource!r}: {attr.replace('_', ' ')} {value!r} must be an integer in [{lo}, {hi}]")
    return str(parsed.interface_type)


def open_transport(resource: str, *, timeout_s: float = DEFAULT_TIMEOUT_S, backend: str = "@py", **kw: Any) -> Transport:
    """Open `resource` with the transport its form calls for (see the module docstring)."""
    kind = check_resource(resource)
    if kind == "serial":
        return SerialTransport(resource, timeout_s=timeout_s, **kw)
    return VisaTransport(resource, timeout_s=timeout_s, backend=backend, **kw)
