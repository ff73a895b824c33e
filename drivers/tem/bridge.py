"""The TEM bridge: a command-set server on the microscope PC, mapped onto the vendor's Python API.

``insitem bridge tem --vendor temscript|pyjem`` (insitem/cli/bridge.py) runs `serve_bridge`. `TemServer` is the shared
line server (`insitem.drivers.lineserver.LineServer`, the one the emulators use) around the
command table's parser (one parser and error queue for the instrument); the TEM emulator serves
the same table with the simulated microscope as backend instead of a vendor adapter.

Adapters (the vendor API shapes were read from the projects' sources/docs; no code is taken):

* ``temscript`` — Thermo Fisher / FEI TEM Scripting through `temscript.Microscope()`:
  ``get_beam_blanked()/set_beam_blanked(bool)``, ``get_voltage()`` (kV),
  ``get_projection_mode()/set_projection_mode("IMAGING"|"DIFFRACTION")``,
  ``get_indicated_magnification()``, ``set_magnification_index(i)``,
  ``get_defocus()/set_defocus(x)`` (metres on Titan-class software, arbitrary units elsewhere:
  ``defocus_m_per_unit`` converts), ``get_family()``, ``get_microscope_id()``, ``get_version()``;
  stage ``get_stage_position()`` -> {"x","y","z" m, "a","b" rad}, ``set_stage_position(pos)``
  (GO), ``get_stage_limits()``, ``get_stage_status()`` ("READY" at rest); ``get_image_shift()/
  set_image_shift((x, y))`` and ``get_beam_shift()/set_beam_shift((x, y))`` in metres (temscript
  1.x/2.x ``BaseMicroscope``, niermann/temscript).
* ``pyjem`` — JEOL PyJEM ``from PyJEM import TEM3``: ``TEM3.Def3().GetBeamBlank()/SetBeamBlank(0|1)``,
  ``TEM3.HT3().GetHtValue()`` (V), ``TEM3.EOS3().GetMagValue()`` -> [value, unit, text],
  ``EOS3.SetSelector(index)``, ``EOS3.GetFunctionMode()`` -> [index, name] (TEM: 0 MAG, 1 MAG2,
  2 LowMAG, 3 SAMAG, 4 DIFF), ``EOS3.SelectFunctionMode(i)``, ``TEM3.Lens3().GetOLf()/SetOLf(dac)``
  (objective fine DAC; ``defocus_m_per_dac`` converts); ``TEM3.Stage3().GetPos()`` -> [x, y, z
  nm, tilt-x, tilt-y deg], ``SetX/SetY/SetZ(nm)``, ``SetTiltXAngle(deg)``, ``GetStatus()`` (per
  axis 0 rest, 1 moving, 2 limit error); ``Def3.GetIS1()/SetIS1(x, y)`` (image shift) and
  ``Def3.GetCLA1()/SetCLA1(x, y)`` (beam shift), DAC steps 0..65535 (``image_shift_m_per_dac``,
  ``beam_shift_m_per_dac`` convert, relative to the start-up values) (PyJEM 1.3.5 TEM3 manual).

What the vendor APIs do not give is kept in the bridge as stored values (`StoredSettings`) and
documented as such: the calibrated beam current and illuminated diameter (measured by the
operator), and the slit geometry (the GIF slit is driven through DigitalMicrograph, i.e. the
camera backend; the bridge keeps the geometry the run declares). Magnification is set by
choosing a step of the site's magnification table (``mag_table``: index -> magnification).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

from insitem.drivers.interfaces import disc_area_m2
from insitem.drivers.lineserver import LineServer
from insitem.drivers.scpi import ScpiParser
from insitem.drivers.tem.commands import BY_NAME, ERROR_QUEUE_SIZE, TemBackend
from insitem.drivers.tem.session import TemService, check_bind

DEFAULT_PORT = 5025  # the customary raw-socket SCPI port


# ---------------------------------------------------------------------------------------------
# The server


class TemServer(LineServer):
    """The TEM command set served by the shared `LineServer` (`insitem.drivers.lineserver`).

    Binds 127.0.0.1 unless told otherwise; ``port=0`` picks a free port (read back in
    ``self.port``); TCP_NODELAY and TCP_QUICKACK as every line server (design.md §5). Every line
    runs through one `TemService` (`insitem.drivers.tem.session`): one parser and error queue
    shared by all clients, the beam lease per connection and the token. Nothing a client sends
    is evaluated or unpickled; malformed input becomes an error entry. Listening beyond loopback
    without a token raises ValueError. `stop()` blanks a leased beam and confirms it first.
    """

    def __init__(
        self,
        backend: TemBackend,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        token: str | None = None,
        queue_size: int = ERROR_QUEUE_SIZE,
        shutdown_confirm_s: float = 5.0,
    ) -> None:
        self.bind_warning = check_bind(host, token)
        self.backend = backend
        self.service = TemService(backend, token=token, queue_size=queue_size)
        self.parser: ScpiParser = self.service.parser
        self.shutdown_confirm_s = shutdown_confirm_s
        super().__init__(self.service, host, port)

    @property
    def resource(self) -> str:
        """VISA resource string of this server."""
        return self.resource_string

    def stop(self) -> None:
        """Blank a leased beam (read back, retried up to `shutdown_confirm_s`), then close.

        The client threads are told to stop only after the blank: a thread that sees the stop
        between two lines ends its session, which would blank as "connection closed" first."""
        try:
            self._sock.close()  # no new connections while blanking
        except OSError:
            pass
        self.service.shutdown(self.shutdown_confirm_s)
        super().stop()

    def __enter__(self) -> "TemServer":
        self.start()
        return self


# ---------------------------------------------------------------------------------------------
# Vendor adapters


@dataclass
class StoredSettings:
    """Values the vendor APIs do not provide, kept by the bridge (SI units).

    Defaults: 0.5 nA on a 2 um disc (physics.md §6.4), slit 200 nm x 1880 nm (§0) — a bridge
    should be told the site's calibration before a run (``BEAM:CURR``, ``BEAM:DIAM``).
    """

    beam_current_A: float = 0.5e-9
    illuminated_diameter_m: float = 2e-6
    slit_inserted: bool = True
    slit_width_m: float = 200e-9
    slit_height_m: float = 1880e-9
    slit_centre_m: tuple[float, float] = (0.0, 0.0)
    slit_angle_rad: float = 0.0


def nearest_step(mag_table: Mapping[int, float] | None, magnification: float, tolerance: float = 0.01) -> int:
    """Index of the table step nearest to `magnification` (log distance); ValueError when more
    than `tolerance` (relative) off every step, RuntimeError without a table."""
    if not mag_table:
        raise RuntimeError("no magnification table configured on the bridge (mag_table)")
    index = min(mag_table, key=lambda i: abs(math.log(mag_table[i] / magnification)))
    if abs(mag_table[index] / magnification - 1) > tolerance:
        raise ValueError(f"magnification {magnification:g} is not a step of the table (nearest {mag_table[index]:g})")
    return index


class _AdapterBase:
    """Dispatch of command names to vendor getters/setters, stored values for the rest."""

    def __init__(self, stored: StoredSettings | None = None) -> None:
        self.stored = stored or StoredSettings()
        self._get: dict[str, Callable[[], Any]] = {}
        self._set: dict[str, Callable[[Any], None]] = {}
        for name in ("beam_current_A", "illuminated_diameter_m", "slit_inserted", "slit_width_m",
                     "slit_height_m", "slit_centre_m", "slit_angle_rad"):
            self._get[name] = lambda name=name: getattr(self.stored, name)
            self._set[name] = lambda v, name=name: setattr(self.stored, name, v)
        self._get["illuminated_area_m2"] = lambda: disc_area_m2(self.stored.illuminated_diameter_m)

    def get(self, name: str) -> Any:
        try:
            getter = self._get[name]
        except KeyError:
            raise RuntimeError(f"{BY_NAME[name].header} is not available on this bridge") from None
        return getter()

    def set(self, name: str, value: Any) -> None:
        try:
            setter = self._set[name]
        except KeyError:
            raise RuntimeError(f"{BY_NAME[name].header} cannot be set on this bridge") from None
        setter(value)


class TemscriptAdapter(_AdapterBase):
    """Thermo Fisher / FEI TEM Scripting through the `temscript` package."""

    def __init__(
        self,
        microscope: Any = None,
        *,
        mag_table: Mapping[int, float] | None = None,
        defocus_m_per_unit: float = 1.0,
        stored: StoredSettings | None = None,
    ) -> None:
        super().__init__(stored)
        if microscope is None:
            import temscript  # only on the microscope PC

            microscope = temscript.Microscope()
        m = self.microscope = microscope
        self.mag_table = dict(mag_table) if mag_table else None
        k = defocus_m_per_unit
        self._get.update(
            beam_blanked=lambda: bool(m.get_beam_blanked()),
            high_tension_V=lambda: float(m.get_voltage()) * 1e3,
            lens_mode=lambda: {"IMAGING": "TEM", "DIFFRACTION": "DIFF"}[str(m.get_projection_mode())],
            magnification=lambda: float(m.get_indicated_magnification()),
            defocus_m=lambda: float(m.get_defocus()) * k,
        )
        self._set.update(
            beam_blanked=lambda v: m.set_beam_blanked(bool(v)),
            lens_mode=lambda v: m.set_projection_mode({"TEM": "IMAGING", "DIFF": "DIFFRACTION"}[v]),
            magnification=lambda v: m.set_magnification_index(nearest_step(self.mag_table, v)),
            defocus_m=lambda v: m.set_defocus(v / k),
        )
        # stage (metres and radians in temscript already; axis "a" is alpha) and shifts
        for name, axis in self.STAGE_AXES.items():
            self._get[name] = lambda axis=axis: float(m.get_stage_position()[axis])
            self._set[name] = lambda v, axis=axis: self._move(axis, v)
        self._get.update(
            stage_moving=lambda: str(m.get_stage_status()) != "READY",
            image_shift_m=lambda: _pair(m.get_image_shift()),
            beam_shift_m=lambda: _pair(m.get_beam_shift()),
        )
        self._set.update(
            image_shift_m=lambda v: m.set_image_shift((float(v[0]), float(v[1]))),
            beam_shift_m=lambda v: m.set_beam_shift((float(v[0]), float(v[1]))),
        )

    STAGE_AXES = {"stage_x_m": "x", "stage_y_m": "y", "stage_z_m": "z", "stage_alpha_rad": "a"}

    def _move(self, axis: str, value: float) -> None:
        """Check the holder's limits (`get_stage_limits`: temscript's own stand-in clamps
        silently, a refused move must be -222), then `set_stage_position({axis: value})` (GO)."""
        lo, hi = self.microscope.get_stage_limits()[axis]
        if not lo <= value <= hi:
            raise ValueError(f"stage {axis} {value:g} outside the stage limits [{lo:g}, {hi:g}]")
        self.microscope.set_stage_position({axis: float(value)})

    def identity(self) -> str:
        m = self.microscope
        return f"insitem,TEM bridge temscript {m.get_family()},{m.get_microscope_id()},{m.get_version()}"


class PyjemAdapter(_AdapterBase):
    """JEOL microscopes through PyJEM's TEM3 package.

    ``defocus_m_per_dac``: objective-fine (OLf) DAC step in metres, a site calibration [est:
    default 1 nm/step; measure it]. Defocus is reported relative to the OLf value at start-up.
    """

    DIFF_FUNCTION = 4  # EOS3 function mode index of DIFF in TEM observation
    MAG_FUNCTION = 0

    #: Stage limits [PyJEM 1.3.5 TEM3 manual, Stage3.SetX/SetY/SetZ "+-100000.0 (nm)" motor range,
    #: SetTiltXAngle "+-90.00 (degree)"; the manual notes units and ranges vary by model and
    #: holder - give the site's with ``stage_limits``]
    STAGE_LIMITS: dict[str, tuple[float, float]] = {
        "stage_x_m": (-100e-6, 100e-6), "stage_y_m": (-100e-6, 100e-6), "stage_z_m": (-100e-6, 100e-6),
        "stage_alpha_rad": (-math.pi / 2, math.pi / 2),
    }
    DAC_RANGE = (0, 65535)  # Def3 IS1/CLA1 I/O output values [PyJEM TEM3 manual]

    def __init__(
        self,
        tem3: Any = None,
        *,
        mag_table: Mapping[int, float] | None = None,
        defocus_m_per_dac: float = 1e-9,
        image_shift_m_per_dac: float = 1e-9,
        beam_shift_m_per_dac: float = 1e-9,
        stage_limits: Mapping[str, tuple[float, float]] | None = None,
        stored: StoredSettings | None = None,
    ) -> None:
        super().__init__(stored)
        if tem3 is None:
            from PyJEM import TEM3  # only on the microscope PC

            tem3 = TEM3
        self.defl, self.eos, self.lens, self.ht = tem3.Def3(), tem3.EOS3(), tem3.Lens3(), tem3.HT3()
        self.stage = tem3.Stage3()
        self.stage_limits = {**self.STAGE_LIMITS, **dict(stage_limits or {})}
        self.is1_zero = _dac_pair(self.defl.GetIS1())
        self.cla1_zero = _dac_pair(self.defl.GetCLA1())
        self.mag_table = dict(mag_table) if mag_table else None
        self.olf_zero = int(self.lens.GetOLf())
        k = defocus_m_per_dac
        self._get.update(
            beam_blanked=lambda: int(self.defl.GetBeamBlank()) == 1,
            high_tension_V=lambda: float(self.ht.GetHtValue()),
            lens_mode=lambda: "DIFF" if int(self.eos.GetFunctionMode()[0]) == self.DIFF_FUNCTION else "TEM",
            magnification=lambda: float(self.eos.GetMagValue()[0]),
            defocus_m=lambda: (int(self.lens.GetOLf()) - self.olf_zero) * k,
        )
        self._set.update(
            beam_blanked=lambda v: self.defl.SetBeamBlank(1 if v else 0),
            lens_mode=lambda v: self.eos.SelectFunctionMode(self.DIFF_FUNCTION if v == "DIFF" else self.MAG_FUNCTION),
            magnification=lambda v: self.eos.SetSelector(nearest_step(self.mag_table, v)),
            defocus_m=lambda v: self.lens.SetOLf(int(round(self.olf_zero + v / k))),
        )
        # Stage3.GetPos() -> [x nm, y nm, z nm, tilt-x deg, tilt-y deg]; SetX/SetY/SetZ (nm), SetTiltXAngle (deg)
        for i, name in enumerate(("stage_x_m", "stage_y_m", "stage_z_m")):
            self._get[name] = lambda i=i: float(self.stage.GetPos()[i]) / 1e9
        self._get["stage_alpha_rad"] = lambda: math.radians(float(self.stage.GetPos()[3]))
        self._get["stage_moving"] = lambda: any(int(v) == 1 for v in self.stage.GetStatus()[:5])
        movers = {"stage_x_m": lambda v: self.stage.SetX(v * 1e9), "stage_y_m": lambda v: self.stage.SetY(v * 1e9),
                  "stage_z_m": lambda v: self.stage.SetZ(v * 1e9),
                  "stage_alpha_rad": lambda v: self.stage.SetTiltXAngle(math.degrees(v))}
        for name, mover in movers.items():
            self._set[name] = lambda v, name=name, mover=mover: self._move(name, v, mover)
        # image shift = Def3 IS1, beam shift = Def3 CLA1 (condenser alignment 1), in DAC steps
        # relative to their values at bridge start-up
        self._get["image_shift_m"] = lambda: self._shift_of(self.defl.GetIS1(), self.is1_zero, image_shift_m_per_dac)
        self._get["beam_shift_m"] = lambda: self._shift_of(self.defl.GetCLA1(), self.cla1_zero, beam_shift_m_per_dac)
        self._set["image_shift_m"] = lambda v: self.defl.SetIS1(*self._dac_of(v, self.is1_zero, image_shift_m_per_dac, "image shift"))
        self._set["beam_shift_m"] = lambda v: self.defl.SetCLA1(*self._dac_of(v, self.cla1_zero, beam_shift_m_per_dac, "beam shift"))

    def _move(self, name: str, value: float, mover: Callable[[float], None]) -> None:
        lo, hi = self.stage_limits[name]
        if not lo <= value <= hi:
            raise ValueError(f"{BY_NAME[name].header} {value:g} outside the stage limits [{lo:g}, {hi:g}]")
        mover(value)

    @staticmethod
    def _shift_of(dac: Any, zero: tuple[int, int], m_per_dac: float) -> tuple[float, float]:
        x, y = _dac_pair(dac)
        return ((x - zero[0]) * m_per_dac, (y - zero[1]) * m_per_dac)

    def _dac_of(self, value: tuple[float, float], zero: tuple[int, int], m_per_dac: float, what: str) -> tuple[int, int]:
        lo, hi = self.DAC_RANGE
        out = tuple(int(round(z + v / m_per_dac)) for z, v in zip(zero, value))
        if not all(lo <= d <= hi for d in out):
            reach = ((lo - zero[0]) * m_per_dac, (hi - zero[0]) * m_per_dac)
            raise ValueError(f"{what} {value[0]:g},{value[1]:g} m beyond the deflector's DAC range (x reach {reach[0]:g} .. {reach[1]:g} m)")
        return out[0], out[1]

    def identity(self) -> str:
        return "insitem,TEM bridge pyjem,,"


def _pair(value: Any) -> tuple[float, float]:
    x, y = value
    return (float(x), float(y))


def _dac_pair(value: Any) -> tuple[int, int]:
    x, y = value
    return (int(x), int(y))


Vendor = Literal["temscript", "pyjem"]


def make_adapter(vendor: str, **options: Any) -> TemBackend:
    """The adapter for a vendor name (options go to its constructor)."""
    if vendor == "temscript":
        return TemscriptAdapter(**options)
    if vendor == "pyjem":
        return PyjemAdapter(**options)
    raise ValueError(f"unknown TEM vendor {vendor!r}: expected 'temscript' or 'pyjem'")


def load_mag_table(path: str | Path) -> dict[int, float]:
    """Read a magnification table: CSV lines ``index,magnification`` (docs/tem-command-set.md).

    ``#`` starts a comment; blank lines and one header line (``index,magnification``) are
    skipped. Indices are the vendor's magnification-step indices (integers >= 0, each once);
    magnifications are indicated magnifications (finite, > 0, each once). Raises ValueError
    with one line naming the file and line.
    """
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the magnification table {path}: {getattr(exc, 'strerror', None) or exc}") from None
    table: dict[int, float] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 2:
            raise ValueError(f"{path}:{n}: expected 'index,magnification', got {line[:60]!r}")
        if not table and fields[0].lower() == "index":
            continue  # header
        try:
            index_f, mag = float(fields[0]), float(fields[1])
        except ValueError:
            raise ValueError(f"{path}:{n}: expected 'index,magnification' numbers, got {line[:60]!r}") from None
        if not index_f.is_integer() or index_f < 0:
            raise ValueError(f"{path}:{n}: the index must be an integer >= 0, got {fields[0]!r}")
        if not (math.isfinite(mag) and mag > 0):
            raise ValueError(f"{path}:{n}: the magnification must be a finite number > 0, got {fields[1]!r}")
        index = int(index_f)
        if index in table:
            raise ValueError(f"{path}:{n}: index {index} appears twice")
        if mag in table.values():
            raise ValueError(f"{path}:{n}: magnification {mag:g} appears twice")
        table[index] = mag
    if not table:
        raise ValueError(f"{path}: no 'index,magnification' rows")
    return table


def serve_bridge(
    vendor: str,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    *,
    adapter_options: Mapping[str, Any] | None = None,
    token: str | None = None,
    ready: Callable[[TemServer], None] | None = None,
) -> None:
    """Run the bridge until interrupted: adapter for `vendor`, `TemServer` on (host, port).

    Prints the VISA resource string to give the acquisition PC (and a loud warning when
    listening beyond loopback; without a token that is refused with ValueError). `ready(server)`
    is called once listening (tests and the CLI use it to learn the port or to stop the
    server). However it ends (KeyboardInterrupt, `server.stop()`), a beam a client leased is
    blanked and read back before it returns.
    """
    check_bind(host, token)  # before touching the microscope
    backend = make_adapter(vendor, **dict(adapter_options or {}))
    server = TemServer(backend, host, port, token=token)
    if server.bind_warning:
        print(f"insitem bridge: {server.bind_warning}", file=sys.stderr, flush=True)
    auth = "token required for changes" if server.service.token_required else "no token (loopback only)"
    print(f"insitem TEM bridge ({vendor}) listening: {server.resource} ({auth})", file=sys.stderr, flush=True)
    if ready is not None:
        ready(server)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


__all__ = [
    "DEFAULT_PORT",
    "load_mag_table",
    "PyjemAdapter",
    "StoredSettings",
    "TemServer",
    "TemscriptAdapter",
    "make_adapter",
    "nearest_step",
    "serve_bridge",
]
