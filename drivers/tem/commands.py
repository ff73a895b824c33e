"""The insitem TEM command set: one table shared by the client driver, the emulator and the bridge.

Vendors reach their microscopes through Python/COM APIs on the microscope PC, not VISA
(design.md §5). insitem therefore defines this small line-based ASCII command set, SCPI style,
spoken over a VISA TCPIP SOCKET or a serial line; `bridge.py` maps it onto the vendor API,
`simulators/emulators/tem.py` onto the simulated microscope. Documented in
docs/tem-command-set.md (keep the two in step: `test_commands.py` checks every row is there).

Wire rules: ASCII lines ending in LF (a CR before it is ignored); SCPI parsing
(case-insensitive, short/long forms, ``;``-separated units, queries answered in order joined by
``;``, error queue ``SYSTem:ERRor[:NEXT]?`` with the standard codes -102, -104, -108, -109,
-113, -222, -224, and -200/-240 for vendor-API/hardware failures). The server-side parsing is
`insitem.drivers.scpi.ScpiParser`, shared with the Keithley emulators.

Values are SI (V, A, m, m², rad); booleans ``0``/``1`` (``ON``/``OFF`` accepted); replies to
numbers, both ways, are <NRf> in Python's shortest round-trip form (``2e-07``,
``1880.5``), so every IEEE double set or read back arrives bit-exact; a non-finite value from
a backend is sent as the SCPI not-a-number 9.91E+37.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Literal, Protocol, Sequence

from insitem.drivers.scpi import (
    ScpiError,
    ScpiParser,
    arg_bool,
    arg_choice,
    arg_float,
    format_error,
    parse_bool,
    parse_floats,
)

Kind = Literal["bool", "float", "choice", "pair"]



@dataclass(frozen=True)
class TemCommand:
    """One row of the command table.

    ``header`` is written the manual way (upper-case = short form): ``BEAM:BLANk`` accepts
    ``BEAM:BLAN``, ``beam:blank``, ``:BEAM:BLANK``. ``name`` is the backend key.
    """

    name: str
    header: str
    kind: Kind
    unit: str
    doc: str
    settable: bool = True
    lo: float = -math.inf
    hi: float = math.inf
    choices: tuple[str, ...] = ()

    @property
    def short(self) -> str:
        """Short form of the header: ``BEAM:BLAN``."""
        return ":".join("".join(c for c in node if not c.islower()) for node in self.header.split(":"))

    @property
    def query(self) -> str:
        """The query form the client sends: ``BEAM:BLAN?``."""
        return self.short + "?"

    @property
    def range_text(self) -> str:
        if self.kind == "bool":
            return "0 | 1 (OFF | ON)"
        if self.kind == "choice":
            return " | ".join(self.choices)
        if math.isinf(self.lo) and math.isinf(self.hi):
            return "-"
        return f"{self.lo:g} .. {self.hi:g}"

    # -- client side ---------------------------------------------------------------------------
    def set_line(self, value: Any) -> str:
        """The command line for a value: ``SLIT:WIDT 2e-07``. Range-checked here too (ValueError)."""
        if not self.settable:
            raise ValueError(f"{self.header} is query-only")
        return f"{self.short} {self.format_arg(value)}"

    def format_arg(self, value: Any) -> str:
        if self.kind == "bool":
            return "1" if value else "0"
        if self.kind == "choice":
            if value not in self.choices:
                raise ValueError(f"{self.header}: {value!r} not one of {self.choices}")
            return str(value)
        values = (value,) if self.kind == "float" else tuple(value)
        if self.kind == "pair" and len(values) != 2:
            raise ValueError(f"{self.header}: expected (x, y), got {value!r}")
        for v in values:
            if not (math.isfinite(v) and self.lo <= v <= self.hi):
                raise ValueError(f"{self.header}: {v} {self.unit} outside [{self.lo:g}, {self.hi:g}]")
        return ",".join(_nrf(v) for v in values)

    def parse_reply(self, text: str) -> Any:
        """Decode a reply; ValueError when it is not what this command answers."""
        if self.kind == "bool":
            return parse_bool(text)
        if self.kind == "choice":
            t = text.strip().upper()
            if t not in self.choices:
                raise ValueError(f"{self.header}: reply {text!r} not one of {self.choices}")
            return t
        if self.kind == "float":
            (v,) = parse_floats(text, 1)
            return v
        x, y = parse_floats(text, 2)
        return (x, y)

    # -- server side ---------------------------------------------------------------------------
    def parse_args(self, args: Sequence[str]) -> Any:
        """Decode the arguments of the set form; raise ScpiError (-104/-222/-224) when invalid."""
        if self.kind == "bool":
            return arg_bool(args[0])
        if self.kind == "choice":
            return arg_choice(args[0], self.choices)
        if self.kind == "float":
            return arg_float(args[0], self.lo, self.hi)
        return (arg_float(args[0], self.lo, self.hi), arg_float(args[1], self.lo, self.hi))

    def format_value(self, value: Any) -> str:
        """Encode a backend value as the reply text."""
        if self.kind == "bool":
            return "1" if value else "0"
        if self.kind == "choice":
            return str(value)
        values = (value,) if self.kind == "float" else tuple(value)
        return ",".join(_nrf(v) for v in values)

    @property
    def n_args(self) -> tuple[int, int]:
        n = 2 if self.kind == "pair" else 1
        return (n, n)


def _nrf(value: float) -> str:
    """Shortest text that reads back as the same double (repr), SCPI NaN for non-finite."""
    v = float(value)
    return repr(v) if math.isfinite(v) else "9.91E+37"


# ---------------------------------------------------------------------------------------------
# The table. One row per setting; actions (*RST, *CLS) and SYST:ERR? are below it.

COMMANDS: tuple[TemCommand, ...] = (
    TemCommand("beam_blanked", "BEAM:BLANk", "bool", "",
               "Beam blanker: 1 = blanked (no electrons on the specimen), 0 = beam on the specimen. "
               "Clients read it back after setting: a blank that did not happen is a safety fault."),
    TemCommand("high_tension_V", "BEAM:HTENsion", "float", "V",
               "Accelerating voltage of the gun.", settable=False, lo=0, hi=1.5e6),
    TemCommand("beam_current_A", "BEAM:CURRent", "float", "A",
               "Beam current on the specimen while unblanked (the calibrated value, e.g. measured "
               "with the screen or a Faraday cup; the bridge stores it, the vendor APIs do not read it).",
               lo=0, hi=1e-6),
    TemCommand("illuminated_diameter_m", "BEAM:DIAMeter", "float", "m",
               "Diameter of the illuminated disc on the specimen (calibrated value, stored by the bridge).",
               lo=1e-9, hi=1e-3),
    TemCommand("illuminated_area_m2", "BEAM:AREA", "float", "m2",
               "Area of the illuminated disc, pi d^2 / 4 (from BEAM:DIAMeter).", settable=False, lo=0, hi=1e-6),
    TemCommand("lens_mode", "LENS:MODE", "choice", "",
               "Projection mode: TEM (imaging) or DIFF (diffraction).", choices=("TEM", "DIFF")),
    TemCommand("magnification", "LENS:MAGnification", "float", "",
               "Indicated magnification (imaging). Vendor bridges select the nearest step of their "
               "magnification table; a value more than 1 % off every step is -222.", lo=1, hi=1e8),
    TemCommand("defocus_m", "LENS:DEFocus", "float", "m",
               "Objective defocus (negative = underfocus).", lo=-1e-3, hi=1e-3),
    TemCommand("slit_inserted", "SLIT:INSerted", "bool", "",
               "Slit in front of the spectrometer inserted (1) or retracted (0)."),
    TemCommand("slit_width_m", "SLIT:WIDTh", "float", "m",
               "Slit width across the strip (the integrated x direction), referred to the specimen.",
               lo=1e-9, hi=1e-3),
    TemCommand("slit_height_m", "SLIT:HEIGht", "float", "m",
               "Slit length along the strip (the spatial y axis of the spectrum image), at the specimen.",
               lo=1e-9, hi=1e-3),
    TemCommand("slit_centre_m", "SLIT:CENTre", "pair", "m",
               "Centre (x, y) of the strip on the specimen, two comma-separated values.", lo=-1e-3, hi=1e-3),
    TemCommand("slit_angle_rad", "SLIT:ANGLe", "float", "rad",
               "Angle of the strip against the specimen y axis.", lo=-math.pi, hi=math.pi),
    # Specimen stage and shifts. The ranges here are the wire's sanity bounds; each backend
    # refuses (-222) what lies outside its own, narrower limits before anything moves.
    TemCommand("stage_x_m", "STAGe:X", "float", "m",
               "Stage x position (absolute). Bound +-2 mm covers a 3 mm grid; the stage's own limits apply.",
               lo=-2e-3, hi=2e-3),
    TemCommand("stage_y_m", "STAGe:Y", "float", "m",
               "Stage y position (absolute).", lo=-2e-3, hi=2e-3),
    TemCommand("stage_z_m", "STAGe:Z", "float", "m",
               "Stage z (height) position (absolute).", lo=-1e-3, hi=1e-3),
    TemCommand("stage_alpha_rad", "STAGe:ALPHa", "float", "rad",
               "Stage alpha tilt (absolute).", lo=-math.pi / 2, hi=math.pi / 2),
    TemCommand("stage_moving", "STAGe:MOVing", "bool", "",
               "1 while the stage is still travelling after a move, 0 at rest.", settable=False),
    TemCommand("image_shift_m", "IMAGe:SHIFt", "pair", "m",
               "Image shift (x, y) referred to the specimen: moves the image on the slit without "
               "moving the beam or the specimen. Two comma-separated values.", lo=-1e-4, hi=1e-4),
    TemCommand("beam_shift_m", "BEAM:SHIFt", "pair", "m",
               "Beam shift (x, y) at the specimen: moves the illuminated disc. Two comma-separated values.",
               lo=-1e-4, hi=1e-4),
)

BY_NAME: dict[str, TemCommand] = {c.name: c for c in COMMANDS}

#: Common and system commands (not settings): header -> what it does, for the docs and the parser.
SYSTEM_COMMANDS: dict[str, str] = {
    "*IDN?": "Identity: <vendor>,<model>,<serial>,<firmware>.",
    "*RST": "Blank the beam (the microscope's safe state). Optics are left as they are.",
    "*CLS": "Clear the error queue.",
    "*OPC?": "Answers 1 once every preceding command has been executed (commands run in order).",
    "SYSTem:ERRor[:NEXT]?": 'Oldest error-queue entry <code>,"<message>"; 0,"No error" when empty.',
    "SYSTem:ERRor:COUNt?": "Number of entries in the error queue.",
}

ERROR_QUEUE_SIZE = 16


class TemBackend(Protocol):
    """What a server needs behind the command set: the emulator's simulated microscope or a
    bridge adapter over a vendor API. Keys are `TemCommand.name`."""

    def get(self, name: str) -> Any: ...

    def set(self, name: str, value: Any) -> None: ...

    def identity(self) -> str:
        """The *IDN? answer, four comma-separated fields."""
        ...


def build_parser(backend: TemBackend, *, queue_size: int = ERROR_QUEUE_SIZE) -> ScpiParser:
    """A SCPI parser serving the whole command set from `backend`.

    Backend failures never reach the client as a crash: ``ValueError`` -> -222 (out of range),
    ``ScpiError`` as raised, any other exception -> -200 (execution error) with its text.
    A query that fails answers nothing (SCPI: the error is queued, the reply omitted).
    """
    parser = ScpiParser(queue_size=queue_size)

    def guarded(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except ScpiError:
            raise
        except ValueError as exc:
            raise ScpiError(-222, str(exc)) from exc
        except Exception as exc:  # noqa: BLE001 - a vendor-API failure becomes an error-queue entry
            raise ScpiError(-200, f"{type(exc).__name__}: {exc}") from exc

    for cmd in COMMANDS:

        def on_query(args: list[str], cmd: TemCommand = cmd) -> str:
            if args:
                raise ScpiError(-108, cmd.query)
            return cmd.format_value(guarded(lambda: backend.get(cmd.name)))

        def on_set(args: list[str], cmd: TemCommand = cmd) -> None:
            value = cmd.parse_args(args)
            guarded(lambda: backend.set(cmd.name, value))

        parser.add(cmd.header, on_set if cmd.settable else None, on_query, cmd.n_args)

    def no_args(fn: Callable[[], Any]) -> Callable[[list[str]], Any]:
        def handler(args: list[str]) -> Any:
            if args:
                raise ScpiError(-108)
            return fn()

        return handler

    parser.add("*IDN", None, no_args(lambda: guarded(backend.identity)), (0, 0))
    parser.add("*RST", no_args(lambda: guarded(lambda: backend.set("beam_blanked", True))), None, (0, 0))
    parser.add("*CLS", no_args(parser.errors.clear), None, (0, 0))
    parser.add("*OPC", None, no_args(lambda: "1"), (0, 0))
    parser.add("SYSTem:ERRor[:NEXT]", None, no_args(lambda: format_error(*parser.pop_error())), (0, 0))
    parser.add("SYSTem:ERRor:COUNt", None, no_args(lambda: str(len(parser.errors))), (0, 0))
    return parser


def split_response(text: str) -> list[str]:
    """Split one response message into the answers of its queries (``;`` outside quotes)."""
    out: list[str] = []
    buf: list[str] = []
    in_quote = False
    for ch in text:
        if ch == '"':
            in_quote = not in_quote
        if ch == ";" and not in_quote:
            out.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    out.append("".join(buf))
    return out
