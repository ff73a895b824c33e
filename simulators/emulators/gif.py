"""Emulated Gatan DigitalMicrograph + SerialEMCCD plugin: the camera socket server.

Serves any object implementing `insitem.drivers.interfaces.Camera` as the camera behind the real
wire protocol (reference: /work/shared/reference/gatan-socket.md, "gs §n"; checklist gs §8.2):

* TCP on 127.0.0.1 by default (design §5; the real plugin binds all interfaces), port 0 picks a
  free port (read back from `port` / `resource`), TCP_NODELAY, and on Linux TCP_QUICKACK re-armed
  after each read (design §5 "Socket latency").
* One client at a time; a new connection closes the current one (gs §1). One request, one reply.
* Requests are validated exactly in the plugin's order with replies −4, −5, −1, −6 (gs §3.1); the
  codec is the driver's own (`insitem.drivers.gif.protocol`).
* Images go out in chunks of ceil(bytes / numChunks) with the 8-byte handshake awaited between
  chunks (gs §5.2); a wrong handshake or none closes the client like the plugin does.
* ExecuteScript runs a tiny whitelisted DM-script interpreter (`DMScript`): literals, variables,
  arithmetic/comparison, if/else, `Exit`, `DoesFunctionExist`, the GIF calls of gs §6.2 and the
  camera-object preamble. Never `eval`. Anything else answers code 1 with −999 like DM (gs §6.1).
* Binning is one value for rows and columns, as in the plugin's acquisition script
  (`CM_CreateAcquisitionParameters_FullCCD(camera, proc, exposure, b, b)`, gs §4.1 L5): the
  backend is configured with (b, b). A client wanting 6 x 1 asks for binning 1 and sums rows
  itself (docs/decisions/0005-gif-unequal-binning.md); the backend then reads every CCD row, so
  read noise, readout time and transfer size are those of the unbinned rows. `acquisitions`
  records the settings handed to the backend.
* Fault injection (`GifFaults`): latency, no answer, dropped connection, truncated image,
  garbled header, positive error codes. Saturation and noise are the backend's business.

Emulator choices where the plugin's behaviour is not established or would crash (named):
* A script that ends without `Exit` returns 0.0 with code 0 (gs §10: not established).
* arrSize <= 0 in an image request answers −2 (the plugin would divide by zero, gs pitfall 13).
* GetDarkReference implements the intended behaviour (an unprocessed dark frame), gs pitfall 14.
* The handshake wait is max(chunk bytes / 5 MB/s, `handshake_min_s`) (gs §5.2 has no floor; the
  floor keeps a loaded test machine from tripping it with small test chunks).
* DM's energy state is modelled as drift tube + HT offset = energy loss; prism offsets are stored
  but do not change the loss. Delays (`Delay(n)`, `IFWaitForFilter()`) do not wait.
* Unsupported calls (DigiScan, K2/K3 saving and aligning, defect lists) answer 26
  (GENERAL_SCRIPT_ERROR: "the DM script threw") with zeroed outputs, as on a DM without them.
"""

from __future__ import annotations

import math
import re
import select
import socket
import struct
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from pydantic import ValidationError

from insitem.drivers.gif import protocol as P
from insitem.drivers.interfaces import Camera, CameraSettings

_QUICKACK = getattr(socket, "TCP_QUICKACK", None)
SELECT_TIMEOUT_S = 0.05  # gs §1: the plugin's idle select timeout
HANDSHAKE_RATE_B_PER_S = 5e6  # gs §5.2: handshake wait = chunk bytes / 5 µs per byte ("5 MB/sec")
PROCESSING_NAMES = {0: "unprocessed", 1: "dark_subtracted", 2: "gain_normalized"}


# =================================================================================================
# Fault injection


@dataclass
class GifFaults:
    """Faults for the next requests. Counters are consumed one per affected request.

    latency_s        delay before every reply (and before the image data)
    no_answer        the next N requests get no reply; the connection stays open
    drop_connection  the next N requests: the server closes the connection instead of replying
    truncate_image   the next N image replies: header and half the data, then the connection closes
    garble_header    the next N replies carry a corrupted length word
    error_codes      function code -> queue of positive return codes to answer instead of running
    """

    latency_s: float = 0.0
    no_answer: int = 0
    drop_connection: int = 0
    truncate_image: int = 0
    garble_header: int = 0
    error_codes: dict[int, deque[int]] = field(default_factory=dict)

    def fail_next(self, code: int, return_code: int, times: int = 1) -> None:
        """Answer the next `times` requests of function `code` with positive `return_code`."""
        if return_code <= 0:
            raise ValueError("injected error codes are the plugin's positive codes (gs §3.2)")
        self.error_codes.setdefault(int(code), deque()).extend([return_code] * times)

    def take(self, name: str) -> bool:
        n = getattr(self, name)
        if n > 0:
            setattr(self, name, n - 1)
            return True
        return False

    def take_error(self, code: int) -> int:
        q = self.error_codes.get(code)
        return q.popleft() if q else 0


# =================================================================================================
# GIF state and the DM-script interpreter


@dataclass
class GifState:
    """The spectrometer as DM scripts see it (energies and widths in eV)."""

    drift_tube_eV: float = 0.0
    ht_offset_eV: float = 0.0
    prism_offset_eV: float = 0.0
    prism_adjust_eV: float = 0.0
    offset_on: bool = True
    slit_in: bool = False
    slit_width_eV: float = 10.0
    filter_mode: int = 0  # 0 = spectroscopy (gs §6.2 IFCGetFilterMode)
    aperture: int = 0
    tv_in: bool = False
    zlp_alignments: int = 0

    @property
    def energy_loss_eV(self) -> float:
        """Energy loss = drift tube + HT offset (emulator model, see the module docstring)."""
        return self.drift_tube_eV + self.ht_offset_eV


class ScriptError(Exception):
    """What DM reports as a script exception: ExecuteScript answers code 1 with −999."""


class _Exit(Exception):
    def __init__(self, value: float) -> None:
        self.value = value


_TOKEN = re.compile(
    r"""(?P<ws>\s+|//[^\n]*|/\*.*?\*/)
      |(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
      |(?P<str>"(?:[^"\\\n]|\\.)*")
      |(?P<id>[A-Za-z_]\w*)
      |(?P<op>==|!=|<=|>=|&&|\|\||[-+*/(){};,=<>!])""",
    re.VERBOSE | re.DOTALL,
)
_TYPES = {"number", "object", "string", "image", "taggroup"}
_MAX_TOKENS = 20_000
_MAX_DEPTH = 60


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ScriptError(f"unexpected character {text[pos]!r} at {pos}")
        pos = m.end()
        kind = m.lastgroup
        assert kind is not None
        if kind != "ws":
            tokens.append((kind, m.group()))
            if len(tokens) > _MAX_TOKENS:
                raise ScriptError("script too long for the emulator")
    return tokens


class DMScript:
    """A whitelisted subset of DigitalMicrograph script, parsed to a small AST and executed.

    Supported: `number|object|string x [= e];`, `x = e;`, `if (e) s [else s]`, `{ ... }`,
    expression statements, numbers, strings, + − * / ! && || == != < > <= >=, and the calls
    registered in `functions` (case-insensitive, as DM). Calls outside the available families,
    unknown names and using a void result as a value are script errors.
    """

    def __init__(self, gif: GifState, families: frozenset[str], n_cameras: int = 1) -> None:
        self.gif = gif
        self.families = families
        self.n_cameras = n_cameras
        g = gif

        def setattr_(name: str, conv: Callable[[Any], Any]) -> Callable[[Any], None]:
            def f(v: Any) -> None:
                setattr(g, name, conv(v))
            return f

        def set_energy_offset(technique: float, value: float) -> None:
            t = int(technique)
            if t == 3:
                g.drift_tube_eV = value
            elif t == 2:
                g.ht_offset_eV = value
            elif t == 1:
                g.prism_offset_eV = value
            elif t == 4:
                g.prism_adjust_eV = value
            else:
                raise ScriptError(f"IFSetEnergyOffset: technique {t} not available")

        def set_energy_loss(value: float) -> float:
            g.drift_tube_eV = value - g.ht_offset_eV
            return 1.0

        def set_slit_width(value: float) -> float:
            if not 0 < value <= 100:
                return 0.0
            g.slit_width_eV = value
            return 1.0

        def align_zlp() -> float:
            g.zlp_alignments += 1
            return 1.0

        # name -> (family or None for core, arity, callable). Void functions return None.
        self.functions: dict[str, tuple[str | None, int, Callable[..., Any]]] = {}

        def reg(family: str | None, name: str, arity: int, fn: Callable[..., Any]) -> None:
            self.functions[name.lower()] = (family, arity, fn)

        reg(None, "Exit", 1, self._exit)
        reg(None, "DoesFunctionExist", 1, self._exists)
        reg(None, "Delay", 1, lambda ticks: None)
        reg(None, "CM_GetCameraManager", 0, lambda: ("object", "manager"))
        reg(None, "CM_GetCameras", 1, lambda mgr: ("object", "cameraList"))
        reg(None, "ObjectAt", 2, self._object_at)
        reg(None, "CM_SelectCamera", 1, lambda cam: None)
        reg(None, "CM_PrepareDarkReference", 1, lambda cam: None)
        # IF family (GMS 2.3.1 onward; gs §6.2)
        reg("IF", "IFGetEnergyLoss", 0, lambda: g.energy_loss_eV)
        reg("IF", "IFSetEnergyLoss", 1, set_energy_loss)
        reg("IF", "IFSetEnergyOffset", 2, set_energy_offset)
        reg("IF", "IFGetSlitIn", 0, lambda: float(g.slit_in))
        reg("IF", "IFSetSlitIn", 1, setattr_("slit_in", lambda v: v != 0))
        reg("IF", "IFGetSlitWidth", 0, lambda: g.slit_width_eV)
        reg("IF", "IFSetSlitWidth", 1, set_slit_width)
        reg("IF", "IFWaitForFilter", 0, lambda: None)
        reg("IF", "GT_CenterZLP", 0, align_zlp)
        # IFC family (SerialEM's GIF control; gs §6.2)
        reg("IFC", "IFCGetSlitIn", 0, lambda: float(g.slit_in))
        reg("IFC", "IFCSetSlitIn", 1, setattr_("slit_in", lambda v: v != 0))
        reg("IFC", "IFCGetSlitWidth", 0, lambda: g.slit_width_eV)
        reg("IFC", "IFCSetSlitWidth", 1, setattr_("slit_width_eV", float))
        reg("IFC", "IFCGetFilterMode", 0, lambda: float(g.filter_mode))
        reg("IFC", "IFCGetAperture", 0, lambda: float(g.aperture))
        reg("IFC", "IFCSetAperture", 1, setattr_("aperture", int))
        reg("IFC", "IFCGetTVIn", 0, lambda: float(g.tv_in))
        reg("IFC", "IFCSetTVIn", 1, setattr_("tv_in", lambda v: v != 0))
        reg("IFC", "IFCGetOffsetOn", 0, lambda: float(g.offset_on))
        reg("IFC", "IFCSetOffsetOn", 1, setattr_("offset_on", lambda v: v != 0))
        reg("IFC", "IFCGetSpectrumOffset", 0, lambda: g.drift_tube_eV)
        reg("IFC", "IFCSetSpectrumOffset", 1, setattr_("drift_tube_eV", float))
        reg("IFC", "IFCGetEnergyShift", 0, lambda: -g.drift_tube_eV)  # sign inverted (gs §6.2)
        reg("IFC", "IFCSetEnergyShift", 1, setattr_("drift_tube_eV", lambda v: -float(v)))
        reg("IFC", "IFCDoAlignZeroLoss", 0, align_zlp)
        # AF family (oldest; gs §6.2)
        reg("AF", "AFGetSlitState", 0, lambda: float(g.slit_in))
        reg("AF", "AFSetSlitState", 1, setattr_("slit_in", lambda v: v != 0))
        reg("AF", "AFGetSlitWidth", 0, lambda: g.slit_width_eV)
        reg("AF", "AFSetSlitWidth", 1, set_slit_width)
        reg("AF", "AFDoAlignZeroLoss", 0, align_zlp)

    def define(self, name: str, arity: int, fn: Callable[..., Any]) -> None:
        """Offer one more core function to scripts (e.g. the time scale a paced emulator
        announces, drivers/emulated.py)."""
        self.functions[name.lower()] = (None, arity, fn)

    # -- built-ins ----------------------------------------------------------------------------
    @staticmethod
    def _exit(value: Any) -> None:
        raise _Exit(_as_number(value))

    def _exists(self, name: Any) -> float:
        if not isinstance(name, str):
            raise ScriptError("DoesFunctionExist needs a string")
        entry = self.functions.get(name.lower())
        return float(entry is not None and (entry[0] is None or entry[0] in self.families))

    def _object_at(self, lst: Any, index: Any) -> tuple[str, str]:
        if lst != ("object", "cameraList") or not 0 <= int(_as_number(index)) < self.n_cameras:
            raise ScriptError("ObjectAt: index out of range")
        return ("object", "camera")

    # -- entry point --------------------------------------------------------------------------
    def run(self, text: str, select_camera: bool = False) -> float:
        """Execute; return the `Exit` value (0.0 without Exit). Raises ScriptError."""
        variables: dict[str, Any] = {}
        if select_camera:  # gs §4.1: the plugin's prefix declares these names
            variables.update(manager=("object", "manager"), cameralist=("object", "cameraList"),
                             camera=("object", "camera"))
        try:
            program = _Parser(_tokenize(text)).program()
            _Runner(self, variables).block(program)
        except _Exit as e:
            return e.value
        except RecursionError as exc:
            raise ScriptError("script nested too deeply") from exc
        return 0.0


def _as_number(v: Any) -> float:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return float(v)
    if v is None:
        raise ScriptError("a function that returns nothing was used as a value")
    raise ScriptError(f"not a number: {v!r}")


class _Parser:
    """Recursive-descent parser: tokens -> nested tuples."""

    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.t = tokens
        self.i = 0
        self.depth = 0

    def peek(self, k: int = 0) -> tuple[str, str] | None:
        j = self.i + k
        return self.t[j] if j < len(self.t) else None

    def at(self, value: str) -> bool:
        tok = self.peek()
        return tok is not None and tok[1] == value and tok[0] == "op"

    def expect(self, value: str) -> None:
        if not self.at(value):
            raise ScriptError(f"expected {value!r}, got {self.peek()}")
        self.i += 1

    def program(self) -> list[Any]:
        out = []
        while self.peek() is not None:
            out.append(self.statement())
        return out

    def _enter(self) -> None:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise ScriptError("script nested too deeply")

    def statement(self) -> Any:
        self._enter()
        try:
            tok = self.peek()
            assert tok is not None
            if tok == ("op", "{"):
                self.i += 1
                body = []
                while not self.at("}"):
                    if self.peek() is None:
                        raise ScriptError("missing '}'")
                    body.append(self.statement())
                self.i += 1
                return ("block", body)
            if tok == ("op", ";"):
                self.i += 1
                return ("block", [])
            if tok[0] == "id" and tok[1].lower() == "if":
                self.i += 1
                self.expect("(")
                cond = self.expr()
                self.expect(")")
                then = self.statement()
                other = None
                nxt = self.peek()
                if nxt is not None and nxt[0] == "id" and nxt[1].lower() == "else":
                    self.i += 1
                    other = self.statement()
                return ("if", cond, then, other)
            nxt = self.peek(1)
            if tok[0] == "id" and tok[1].lower() in _TYPES and nxt is not None and nxt[0] == "id":
                self.i += 2
                init = None
                if self.at("="):
                    self.i += 1
                    init = self.expr()
                self.end_statement()
                return ("decl", nxt[1].lower(), init)
            if tok[0] == "id" and nxt == ("op", "="):
                self.i += 2
                value = self.expr()
                self.end_statement()
                return ("assign", tok[1].lower(), value)
            e = self.expr()
            self.end_statement()
            return ("expr", e)
        finally:
            self.depth -= 1

    def end_statement(self) -> None:
        if self.peek() is None or self.at("}"):
            return  # DM accepts a missing ';' before the end of a block or script
        self.expect(";")

    _BINARY = (("||",), ("&&",), ("==", "!=", "<", ">", "<=", ">="), ("+", "-"), ("*", "/"))

    def expr(self, level: int = 0) -> Any:
        if level == len(self._BINARY):
            return self.unary()
        left = self.expr(level + 1)
        while True:
            tok = self.peek()
            if tok is None or tok[0] != "op" or tok[1] not in self._BINARY[level]:
                return left
            self.i += 1
            left = ("bin", tok[1], left, self.expr(level + 1))

    def unary(self) -> Any:
        self._enter()
        try:
            if self.at("-") or self.at("!") or self.at("+"):
                op = self.t[self.i][1]
                self.i += 1
                return ("un", op, self.unary())
            return self.primary()
        finally:
            self.depth -= 1

    def primary(self) -> Any:
        tok = self.peek()
        if tok is None:
            raise ScriptError("unexpected end of script")
        self.i += 1
        kind, text = tok
        if kind == "num":
            return ("lit", float(text))
        if kind == "str":
            return ("lit", text[1:-1].encode("ascii", "replace").decode("unicode_escape", "replace"))
        if kind == "id":
            if self.at("("):
                self.i += 1
                args = []
                if not self.at(")"):
                    args.append(self.expr())
                    while self.at(","):
                        self.i += 1
                        args.append(self.expr())
                self.expect(")")
                return ("call", text, args)
            return ("var", text.lower())
        if tok == ("op", "("):
            self._enter()
            try:
                e = self.expr()
            finally:
                self.depth -= 1
            self.expect(")")
            return e
        raise ScriptError(f"unexpected {text!r}")


class _Runner:
    def __init__(self, script: DMScript, variables: dict[str, Any]) -> None:
        self.s = script
        self.vars = variables

    def block(self, stmts: list[Any]) -> None:
        for st in stmts:
            self.stmt(st)

    def stmt(self, st: Any) -> None:
        kind = st[0]
        if kind == "block":
            self.block(st[1])
        elif kind == "if":
            if _as_number(self.eval(st[1])) != 0:
                self.stmt(st[2])
            elif st[3] is not None:
                self.stmt(st[3])
        elif kind == "decl":
            if st[1] in self.vars:
                raise ScriptError(f"variable {st[1]!r} declared twice")
            self.vars[st[1]] = self.eval(st[2]) if st[2] is not None else 0.0
        elif kind == "assign":
            if st[1] not in self.vars:
                raise ScriptError(f"unknown variable {st[1]!r}")
            self.vars[st[1]] = self.eval(st[2])
        else:
            self.eval(st[1])

    def eval(self, e: Any) -> Any:
        kind = e[0]
        if kind == "lit":
            return e[1]
        if kind == "var":
            if e[1] not in self.vars:
                raise ScriptError(f"unknown variable {e[1]!r}")
            return self.vars[e[1]]
        if kind == "un":
            v = _as_number(self.eval(e[2]))
            return -v if e[1] == "-" else (float(v == 0) if e[1] == "!" else v)
        if kind == "bin":
            op = e[1]
            if op in ("&&", "||"):
                a = _as_number(self.eval(e[2])) != 0
                if (op == "&&" and not a) or (op == "||" and a):
                    return float(a)
                return float(_as_number(self.eval(e[3])) != 0)
            a, b = _as_number(self.eval(e[2])), _as_number(self.eval(e[3]))
            if op == "/":
                if b == 0:
                    raise ScriptError("division by zero")
                return a / b
            ops: dict[str, Callable[[float, float], float]] = {
                "+": lambda x, y: x + y, "-": lambda x, y: x - y, "*": lambda x, y: x * y,
                "==": lambda x, y: float(x == y), "!=": lambda x, y: float(x != y),
                "<": lambda x, y: float(x < y), ">": lambda x, y: float(x > y),
                "<=": lambda x, y: float(x <= y), ">=": lambda x, y: float(x >= y),
            }
            return ops[op](a, b)
        # call
        name, args = e[1], e[2]
        entry = self.s.functions.get(name.lower())
        if entry is None or (entry[0] is not None and entry[0] not in self.s.families):
            raise ScriptError(f"unknown function {name}()")
        family, arity, fn = entry
        if len(args) != arity:
            raise ScriptError(f"{name}() takes {arity} arguments, got {len(args)}")
        values = [self.eval(a) for a in args]
        numeric = [v if isinstance(v, (str, tuple)) else _as_number(v) for v in values]
        result = fn(*numeric)
        if isinstance(result, float) and not math.isfinite(result):
            raise ScriptError(f"{name}() gave {result}")
        return result


# =================================================================================================
# The server


class _Drop(Exception):
    """Close the client connection (bad handshake, fault, undecodable stream)."""


class RecentLog(list):
    """A list that keeps about the newest `limit` items: the request and error logs of a server that
    may run for days. Trimmed in halves, so appending stays O(1) amortised; indexing, slicing and
    `len` behave as on a list of the kept items."""

    def __init__(self, limit: int = 10_000) -> None:
        super().__init__()
        self.limit = limit

    def append(self, item: Any) -> None:
        super().append(item)
        if len(self) > 2 * self.limit:
            del self[: len(self) - self.limit]


class GifEmulator:
    """SerialEMCCD-protocol camera server around a `Camera` backend.

    `with GifEmulator(backend) as emu: GifCamera(emu.resource)`. `superchunk_bytes` may be made
    small in tests to force multi-chunk transfers of small frames.
    """

    DM_VERSION = 50302  # gs §8.2: sensible emulator constants (GMS 3.32)
    DM_BUILD = 3320
    PLUGIN_VERSION = 120

    def __init__(self, backend: Camera, host: str = "127.0.0.1", port: int = 0, *,
                 superchunk_bytes: int = P.SUPERCHUNK_BYTES, max_request_bytes: int = 1 << 24,
                 families: frozenset[str] = frozenset({"AF", "IFC", "IF"}), n_cameras: int = 1,
                 io_timeout_s: float = 5.0, handshake_min_s: float = 2.0,
                 missing_codes: frozenset[int] = frozenset()) -> None:
        if superchunk_bytes <= 0 or superchunk_bytes % 4:
            raise ValueError("superchunk_bytes must be a positive multiple of 4")
        self.backend = backend
        self.host = host
        self._port = port
        self.superchunk_bytes = superchunk_bytes
        self.max_request_bytes = max_request_bytes
        self.io_timeout_s = io_timeout_s
        self.handshake_min_s = handshake_min_s
        self.n_cameras = n_cameras
        # codes an older plugin does not know: answered −1 (gs §4 "since" column), e.g. {31} for
        # a plugin older than 2015 that has no GetPluginVersion
        self.missing_codes = frozenset(int(c) for c in missing_codes)
        self.faults = GifFaults()
        self.gif = GifState()
        self.script = DMScript(self.gif, families, n_cameras)
        # plugin globals (gs §1 "plugin state": persist across connections)
        self.camera_index = 0
        self.read_mode = -1
        self.read_scaling = 1.0
        self.debug_mode = 0
        self.inserted = [True] * n_cameras
        self.queued_script = ""
        self.last_error = 0
        self.requests: list[P.Request] = RecentLog()  # decoded, valid requests in arrival order (the newest 10-20 k)
        self.acquisitions: list[CameraSettings] = RecentLog()  # what the emulated DM asked the backend for
        self.connections = 0
        self.errors: list[str] = RecentLog()  # what DM would print in its Results window
        self._listener: socket.socket | None = None
        self._client: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._handlers: dict[int, Callable[[P.Request], tuple[int, tuple, tuple, tuple] | _Image]] = {
            P.Fn.ExecuteScript: self._execute_script,
            P.Fn.SetDebugMode: self._store("debug_mode"),
            P.Fn.SetDMVersion: lambda r: (0, (), (), ()),
            P.Fn.SetCurrentCamera: self._store("camera_index"),
            P.Fn.QueueScript: self._queue_script,
            P.Fn.GetAcquiredImage: self._acquire,
            P.Fn.GetDarkReference: self._dark,
            P.Fn.GetGainReference: self._gain,
            P.Fn.SelectCamera: self._select_camera,
            P.Fn.SetReadMode: self._set_read_mode,
            P.Fn.GetNumberOfCameras: lambda r: (0, (self.n_cameras,), (), ()),
            P.Fn.IsCameraInserted: self._is_inserted,
            P.Fn.InsertCamera: self._insert,
            P.Fn.GetDMVersion: lambda r: (0, (self.DM_VERSION,), (), ()),
            P.Fn.GetDMCapabilities: lambda r: (0, (), (True, True, True), ()),
            P.Fn.SetShutterNormallyClosed: lambda r: (0, (), (), ()),
            P.Fn.SetNoDMSettling: lambda r: (0, (), (), ()),
            P.Fn.StopContinuousCamera: lambda r: (0, (), (), ()),
            P.Fn.GetPluginVersion: lambda r: (0, (self.PLUGIN_VERSION,), (), ()),
            P.Fn.GetLastError: lambda r: (0, (self.last_error,), (), ()),
            P.Fn.FreeK2GainReference: lambda r: (0, (), (), ()),
            P.Fn.WaitUntilReady: lambda r: (0, (), (), ()),
            P.Fn.GetLastDoseRate: lambda r: (0, (), (), (0.0,)),
            P.Fn.GetDMVersionAndBuild: lambda r: (0, (self.DM_VERSION, self.DM_BUILD), (), ()),
            P.Fn.CheckReferenceTime: lambda r: (1, (0, 0), (), ()),  # no such file on this "DM PC"
        }

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._listener is None:
            raise RuntimeError("emulator not started")
        return self._listener.getsockname()[1]

    @property
    def resource(self) -> str:
        """Plain-socket resource for `GifCamera`."""
        return f"gif://{self.host}:{self.port}"

    @property
    def visa_resource(self) -> str:
        return f"TCPIP0::{self.host}::{self.port}::SOCKET"

    def start(self) -> "GifEmulator":
        # SO_REUSEADDR set, the socket closed if the bind fails; gs §1: backlog 2
        lst = socket.create_server((self.host, self._port), backlog=2)
        self._listener = lst
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name=f"gif-emulator:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.drop_client()  # unblocks a pending recv in the server thread
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self._close_client()
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def __enter__(self) -> "GifEmulator":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def drop_client(self) -> None:
        """Close the present client connection from the server side (a fault from outside)."""
        c = self._client
        if c is not None:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # -- socket loop ---------------------------------------------------------------------------
    def _close_client(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            finally:
                self._client = None

    def _serve(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            socks = [self._listener] + ([self._client] if self._client is not None else [])
            try:
                readable, _, _ = select.select(socks, [], [], SELECT_TIMEOUT_S)
            except (OSError, ValueError):
                self._close_client()
                continue
            if self._listener in readable:
                try:
                    conn, _ = self._listener.accept()
                except OSError:
                    continue
                self._close_client()  # gs §1: a new client replaces the current one
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn.settimeout(self.io_timeout_s)
                self._client = conn
                self.connections += 1
                continue
            if self._client is not None and self._client in readable:
                try:
                    self._serve_one(self._client)
                except (_Drop, OSError):
                    self._close_client()
                except Exception as exc:  # noqa: BLE001 - a server must never die on one request
                    self.errors.append(f"internal error: {exc!r}")
                    self._close_client()

    def _recv_exact(self, conn: socket.socket, n: int) -> bytes:
        """Read `n` bytes. A client that stalls mid-message while a new one is waiting to connect
        is dropped at once (gs §1: a new connection replaces the current client), so a stalled
        client cannot hold the only server thread for `io_timeout_s`."""
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            if self._listener is not None:
                readable, _, _ = select.select([conn, self._listener], [], [], self.io_timeout_s)
                if not readable:
                    raise _Drop("client stalled mid-message")
                if conn not in readable:
                    self.errors.append("a new client replaced one that stalled mid-message")
                    raise _Drop("replaced by a new client")
            k = conn.recv_into(view[got:], n - got)
            if k == 0:
                raise _Drop("peer closed")
            got += k
        if _QUICKACK is not None:
            try:
                conn.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
            except OSError:
                pass
        return bytes(buf)

    def _send(self, conn: socket.socket, data: bytes | memoryview) -> None:
        view = memoryview(data).cast("B")
        for start in range(0, len(view), P.SEND_SLICE_BYTES):  # gs §5.2 slices, invisible on the wire
            conn.sendall(view[start: start + P.SEND_SLICE_BYTES])

    def _pause(self) -> None:
        if self.faults.latency_s > 0:
            self._stop.wait(self.faults.latency_s)

    def _reply(self, conn: socket.socket, data: bytes) -> None:
        if self.faults.take("garble_header"):
            data = struct.pack("<i", 0x41414141 ^ len(data)) + data[4:]
        self._send(conn, data)

    def _serve_one(self, conn: socket.socket) -> None:
        head = self._recv_exact(conn, 4)
        (total,) = struct.unpack("<i", head)
        if total < 4:
            self._reply(conn, P.pack_reply(0, P.ERR_TOO_SHORT))
            return
        if total > self.max_request_bytes:
            self.errors.append(f"request of {total} bytes exceeds the buffer")
            self._reply(conn, P.pack_reply(0, P.ERR_TOO_LONG))
            raise _Drop("cannot resynchronise after an oversized request")
        message = head + self._recv_exact(conn, total - 4)
        try:
            request = P.unpack_request(message, self.max_request_bytes)
            if request.code in self.missing_codes:
                raise P.BadRequest(f"Function code not found: {request.code}", P.ERR_UNKNOWN_FUNCTION)
        except P.BadRequest as exc:
            self.errors.append(str(exc))
            self._reply(conn, P.pack_reply(0, exc.code))
            return
        self.requests.append(request)
        if self.faults.take("drop_connection"):
            raise _Drop("fault: dropped connection")
        if self.faults.take("no_answer"):
            return
        self._pause()
        spec = P.FunctionTable.spec(request.code)
        injected = self.faults.take_error(request.code)
        if injected:
            longs = request.longs[:3] if spec.has_image else ()  # pitfall 8: size fields echo the request
            self._reply(conn, P.pack_reply(request.code, injected, longs))
            return
        handler = self._handlers.get(request.code)
        try:
            result = handler(request) if handler else (P.GENERAL_SCRIPT_ERROR, (), (), ())
        except ScriptError as exc:
            self.errors.append(f"{spec.name}: {exc}")
            result = (P.GENERAL_SCRIPT_ERROR, (), (), ())
        except Exception as exc:  # noqa: BLE001 - gs §3.2: −2 for an exception during the call
            self.errors.append(f"{spec.name}: {exc!r}")
            self._reply(conn, P.pack_reply(request.code, P.ERR_EXCEPTION))
            return
        if isinstance(result, _Image):
            self._send_image(conn, request.code, result)
            return
        rc, longs, bools, doubles = result
        if request.code != P.Fn.ExecuteScript:
            self.last_error = rc
        self._reply(conn, P.pack_reply(request.code, rc, longs, bools, doubles))

    def _send_image(self, conn: socket.socket, code: int, image: _Image) -> None:
        data = memoryview(np.ascontiguousarray(image.data)).cast("B")
        spec = P.FunctionTable.spec(code)
        nbytes = len(data)
        units = nbytes // spec.image_unit_bytes
        n_chunks = P.chunk_count(nbytes, self.superchunk_bytes)
        height, width = image.data.shape
        self.last_error = 0
        self._reply(conn, P.pack_reply(code, 0, (units, width, height, n_chunks)))
        if self.faults.take("truncate_image"):
            self._send(conn, data[: nbytes // 2])
            raise _Drop("fault: truncated image")
        offset = 0
        for k, size in enumerate(P.chunk_sizes(nbytes, n_chunks)):
            if k:
                self._await_handshake(conn, size)
            self._send(conn, data[offset: offset + size])
            offset += size

    def _await_handshake(self, conn: socket.socket, previous_chunk_bytes: int) -> None:
        """gs §5.2 ListenForHandshake: exactly `08 00 00 00 18 00 00 00` in time, else close."""
        wait = max(previous_chunk_bytes / HANDSHAKE_RATE_B_PER_S, self.handshake_min_s)
        readable, _, _ = select.select([conn], [], [], wait)
        if not readable:
            self.errors.append("handshake timeout")
            raise _Drop("no handshake")
        got = self._recv_exact(conn, 8)
        if got != P.HANDSHAKE:
            self.errors.append(f"bad handshake {got.hex()}")
            raise _Drop("bad handshake")

    # -- handlers --------------------------------------------------------------------------------
    def _store(self, attr: str) -> Callable[[P.Request], tuple[int, tuple, tuple, tuple]]:
        def handler(r: P.Request) -> tuple[int, tuple, tuple, tuple]:
            setattr(self, attr, r.longs[0])
            return 0, (), (), ()
        return handler

    def _execute_script(self, r: P.Request) -> tuple[int, tuple, tuple, tuple]:
        text = P.unpack_script(r.array)
        try:
            value = self.script.run(text, select_camera=r.bools[0])
        except ScriptError as exc:
            self.errors.append(f"script failed: {exc}\n{text}")
            value = P.SCRIPT_ERROR_SENTINEL
        self.last_error = P.CLIENT_SCRIPT_ERROR  # gs pitfall 11: always 25 after ExecuteScript
        return (1 if value == P.SCRIPT_ERROR_SENTINEL else 0), (), (), (value,)

    def _queue_script(self, r: P.Request) -> tuple[int, tuple, tuple, tuple]:
        self.queued_script += P.unpack_script(r.array) + "\n"
        return 0, (), (), ()

    def _select_camera(self, r: P.Request) -> tuple[int, tuple, tuple, tuple]:
        if not 0 <= r.longs[0] < self.n_cameras:
            return P.GENERAL_SCRIPT_ERROR, (), (), ()
        self.camera_index = r.longs[0]
        return 0, (), (), ()

    def _set_read_mode(self, r: P.Request) -> tuple[int, tuple, tuple, tuple]:
        self.read_mode, self.read_scaling = r.longs[0], r.doubles[0]
        return 0, (), (), ()

    def _is_inserted(self, r: P.Request) -> tuple[int, tuple, tuple, tuple]:
        if not 0 <= r.longs[0] < self.n_cameras:
            return 1, (), (False,), ()
        return 0, (), (self.inserted[r.longs[0]],), ()

    def _insert(self, r: P.Request) -> tuple[int, tuple, tuple, tuple]:
        if not 0 <= r.longs[0] < self.n_cameras:
            return P.GENERAL_SCRIPT_ERROR, (), (), ()
        self.inserted[r.longs[0]] = r.bools[0]
        return 0, (), (), ()

    def _settings(self, exposure_s: float, binning: int, area_binned: tuple[int, int, int, int],
                  processing: str) -> CameraSettings:
        b = binning
        top, left, bottom, right = area_binned
        dispersion = self.backend.settings.dispersion_eV_per_px if self.backend.settings else 0.1
        # gs §4.1 D0: the plugin pads the exposure by max(0.00005, min(0.0005, exposure/100)) s
        padded = exposure_s + max(0.00005, min(0.0005, exposure_s / 100))
        return CameraSettings(
            exposure_s=padded, binning=(b, b), readout_area=(top * b, left * b, bottom * b, right * b),
            energy_offset_eV=self.gif.energy_loss_eV, dispersion_eV_per_px=dispersion, processing=processing,
        )

    def _image_common(self, units: int, binning: int, area: tuple[int, int, int, int], exposure_s: float,
                      processing: str, divide_by_2: int, dark: bool) -> "_Image | tuple":
        fail = (P.GENERAL_SCRIPT_ERROR, (0, 0, 0, 0), (), ())  # pitfall 8: zeros after a script failure
        if units <= 0:
            raise ValueError("arrSize must not be 0 (pitfall 13)")
        if binning < 1 or not 0 < exposure_s <= 3600 or not self.inserted[self.camera_index]:
            return fail
        try:
            settings = self._settings(exposure_s, binning, area, processing)
            self.backend.configure(settings)
            self.acquisitions.append(settings)
            if dark:
                data = np.asarray(self.backend.dark_reference(settings.exposure_s, 1))
            else:
                self.backend.start_exposure()
                data = np.asarray(self.backend.read_frame().data)
        except (ValueError, ValidationError, RuntimeError) as exc:
            self.errors.append(f"acquisition script threw: {exc}")
            return fail
        data = _to_16bit(data, divide_by_2 if divide_by_2 in (-1, 0, 1) else 0)
        height, width = data.shape
        if height * width > units:  # gs §5.1: height cut to arrSize / width
            self.errors.append("image larger than arrSize: height truncated")
            data = data[: max(units // width, 0)]
            if data.shape[0] == 0:
                return fail
        return _Image(np.ascontiguousarray(data))

    def _acquire(self, r: P.Request) -> "_Image | tuple":
        units, _w, _h, processing, binning, top, left, bottom, right, _shutter, _delay, div2, _corr = r.longs
        processing &= 7  # gs pitfall 14: the plugin masks the processing value with 7
        if processing not in PROCESSING_NAMES:
            return P.GENERAL_SCRIPT_ERROR, (0, 0, 0, 0), (), ()
        return self._image_common(units, binning, (top, left, bottom, right), r.doubles[0],
                                  PROCESSING_NAMES[processing], div2, dark=False)

    def _dark(self, r: P.Request) -> "_Image | tuple":
        units, _w, _h, binning, top, left, bottom, right, _shutter, div2, _corr = r.longs
        return self._image_common(units, binning, (top, left, bottom, right), r.doubles[0], "unprocessed",
                                  div2, dark=True)

    def _gain(self, r: P.Request) -> "_Image | tuple":
        capacity, _w, _h, binning = r.longs
        if capacity <= 0:
            raise ValueError("arrSize must not be 0 (pitfall 13)")
        if binning < 1:
            return P.GENERAL_SCRIPT_ERROR, (0, 0, 0, 0), (), ()
        gain = np.asarray(self.backend.gain_reference(), dtype=np.float32)
        if binning > 1:
            rows, cols = gain.shape[0] // binning, gain.shape[1] // binning
            gain = gain[: rows * binning, : cols * binning].reshape(rows, binning, cols, binning).mean(axis=(1, 3))
        height, width = gain.shape
        if height * width > capacity:
            gain = gain[: capacity // width]
        if gain.size == 0:
            return P.GENERAL_SCRIPT_ERROR, (0, 0, 0, 0), (), ()
        return _Image(np.ascontiguousarray(gain, dtype="<f4"))


@dataclass
class _Image:
    data: np.ndarray  # (height, width), uint16/int16 for 2-byte units or float32 for the gain reference


def _to_16bit(data: np.ndarray, divide_by_2: int) -> np.ndarray:
    """DM image -> wire pixels (gs §5.1 ProcessImage): uint16 unchanged; floats rounded and clamped
    to 0..65535; 32-bit integers cut to unsigned 16 bits (negative to 0, wrap above 65535); with
    divideBy2 = 1 every type is halved into signed 16 bits."""
    if divide_by_2 == 1:
        return np.floor_divide(data.astype(np.int64), 2).clip(-32768, 32767).astype("<i2")
    if data.dtype == np.uint16:
        return data.astype("<u2", copy=False)
    if np.issubdtype(data.dtype, np.floating):
        return np.clip(np.rint(data), 0, 65535).astype("<u2")
    wide = data.astype(np.int64)
    return (np.where(wide < 0, 0, wide) & 0xFFFF).astype("<u2")
