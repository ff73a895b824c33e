"""The TEM bridge: a command-set server on the microscope PC, mapped onto the vendor's Python API.

``insitem bridge tem --vendor temscript|pyjem`` runs `serve_bridge`. `TemServer` is the shared
line server (`insitem.drivers.lineserver.LineServer`, the one the emulators use) around the
command table's parser (one parser and error queue for the instrument); the TEM emulator serves
the same table with the simulated microscope as backend instead of a vendor adapter.

Adapters (the vendor API shapes were read from the projects' sources/docs; no code is taken):

* ``temscript`` — Thermo Fisher / FEI TEM Scripting through `temscript.Microscope()`:
  ``get_beam_blanked()/set_beam_blanked(bool)``, ``get_voltage()`` (kV),
  ``get_projection_mode()/set_projection_mode("IMAGING"|"DIFFRACTION")``,
  ``get_indicated_magnification()``, ``set_magnification_index(i)``,
  ``get_defocus()/set_defocus(x)`` (metres on Titan-class software, arbitrary units elsewhere:
  ``defocus_m_per_unit`` converts), ``get_family()``, ``get_microscope_id()``, ``get_version()``.
* ``pyjem`` — JEOL PyJEM ``from PyJEM import TEM3``: ``TEM3.Def3().GetBeamBlank()/SetBeamBlank(0|1)``,
  ``TEM3.HT3().GetHtValue()`` (V), ``TEM3.EOS3().GetMagValue()`` -> [value, unit, text],
  ``EOS3.SetSelector(index)``, ``EOS3.GetFunctionMode()`` -> [index, name] (TEM: 0 MAG, 1 MAG2,
  2 LowMAG, 3 SAMAG, 4 DIFF), ``EOS3.SelectFunctionMode(i)``, ``TEM3.Lens3().GetOLf()/SetOLf(dac)``
  (objective fine DAC; ``defocus_m_per_dac`` converts).

What the vendor APIs do not give is kept in the bridge as stored values (`StoredSettings`) and
documented as such: the calibrated beam current and illuminated diameter (measured by the
operator), and the slit geometry (the GIF slit is driven through DigitalMicrograph, i.e. the
camera backend; the bridge keeps the geometry the run declares). Magnification is set by
choosing a step of the site's magnification table (``mag_table``: index -> magnification).
"""

from __future__ import annotations

import errno
import math
import sys
import threading
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping

from insitem.drivers.interfaces import disc_area_m2
from insitem.drivers.lineserver import LineServer
from insitem.drivers.scpi import ScpiParser
from insitem.drivers.tem.commands import BY_NAME, ERROR_QUEUE_SIZE, TemBackend, build_parser

DEFAULT_PORT = 5025  # the customary raw-socket SCPI port


# ---------------------------------------------------------------------------------------------
# The server


class TemServer(LineServer):
    """The TEM command set served by the shared `LineServer` (`insitem.drivers.lineserver`).

    Binds 127.0.0.1 unless told otherwise; ``port=0`` picks a free port (read back in
    ``self.port``); TCP_NODELAY and TCP_QUICKACK as every line server (design.md §5). Every line
    runs through one `ScpiParser` under the server's lock: clients share the instrument and its
    error queue. Nothing a client sends is evaluated or unpickled; malformed input becomes an
    error entry. The server itself is the line instrument (`handle`, `push_error`).
    """

    def __init__(
        self, backend: TemBackend, host: str = "127.0.0.1", port: int = 0, *, queue_size: int = ERROR_QUEUE_SIZE
    ) -> None:
        self.backend = backend
        self.parser: ScpiParser = build_parser(backend, queue_size=queue_size)
        super().__init__(self, host, port)

    @property
    def resource(self) -> str:
        """VISA resource string of this server."""
        return self.resource_string

    def handle(self, line: str) -> str | None:
        """One program message through the parser; the reply text or None."""
        return self.parser.execute(line)

    def push_error(self, code: int, message: str | None = None) -> None:
        self.parser.push_error(code, message)

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

    def __init__(
        self,
        tem3: Any = None,
        *,
        mag_table: Mapping[int, float] | None = None,
        defocus_m_per_dac: float = 1e-9,
        stored: StoredSettings | None = None,
    ) -> None:
        super().__init__(stored)
        if tem3 is None:
            from PyJEM import TEM3  # only on the microscope PC

            tem3 = TEM3
        self.defl, self.eos, self.lens, self.ht = tem3.Def3(), tem3.EOS3(), tem3.Lens3(), tem3.HT3()
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

    def identity(self) -> str:
        return "insitem,TEM bridge pyjem,,"


Vendor = Literal["temscript", "pyjem"]


def make_adapter(vendor: str, **options: Any) -> TemBackend:
    """The adapter for a vendor name (options go to its constructor)."""
    if vendor == "temscript":
        return TemscriptAdapter(**options)
    if vendor == "pyjem":
        return PyjemAdapter(**options)
    raise ValueError(f"unknown TEM vendor {vendor!r}: expected 'temscript' or 'pyjem'")


def serve_bridge(
    vendor: str,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    *,
    adapter_options: Mapping[str, Any] | None = None,
    ready: Callable[[TemServer], None] | None = None,
) -> None:
    """Run the bridge until interrupted: adapter for `vendor`, `TemServer` on (host, port).

    Prints the VISA resource string to give the acquisition PC. `ready(server)` is called once
    listening (tests and the CLI use it to learn the port or to stop the server).
    """
    backend = make_adapter(vendor, **dict(adapter_options or {}))
    server = TemServer(backend, host, port)
    print(f"insitem TEM bridge ({vendor}) listening: {server.resource}", file=sys.stderr, flush=True)
    if ready is not None:
        ready(server)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


_BIND_ERRNOS = frozenset({errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES})

#: the Python package each vendor adapter needs on the microscope PC
VENDOR_PACKAGES = {"temscript": "temscript", "pyjem": "PyJEM"}


def bridge_command(args: Any) -> int:
    """`insitem bridge tem --vendor temscript|pyjem [--bind HOST] [--port N]`.

    Checks that the vendor package imports (it exists only on the microscope PC), then runs
    `serve_bridge` until Ctrl-C or SIGTERM and returns 0. A missing vendor package, a port that
    cannot be bound or an adapter that cannot reach the microscope is one line on stderr:
    exit 2 for the first two (wrong machine or arguments), 1 for the third (a device fault).
    """
    import importlib
    import signal

    vendor = str(args.vendor).lower()
    package = VENDOR_PACKAGES.get(vendor)
    if package is None:
        print(f"insitem bridge: unknown vendor {args.vendor!r}; expected temscript or pyjem", file=sys.stderr)
        return 2
    try:
        importlib.import_module(package)
    except ImportError as exc:
        print(
            f"insitem bridge: vendor package {package!r} is not importable here ({exc.__class__.__name__}); "
            f"run the bridge on the microscope PC where {package} is installed",
            file=sys.stderr,
        )
        return 2

    def _on_sigterm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # serve_bridge stops cleanly on it

    main_thread = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGTERM, _on_sigterm) if main_thread else None
    try:
        serve_bridge(vendor, args.bind, int(args.port))
    except OSError as exc:
        if exc.errno not in _BIND_ERRNOS:  # raised by the vendor API at start-up, not by bind()
            print(f"insitem bridge: {vendor} adapter failed: {exc.__class__.__name__}: {exc}", file=sys.stderr)
            return 1
        print(f"insitem bridge: cannot listen on {args.bind} port {args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # noqa: BLE001 - the vendor API failing at start-up: one line, no traceback
        print(f"insitem bridge: {vendor} adapter failed: {exc.__class__.__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        if main_thread and old is not None:
            signal.signal(signal.SIGTERM, old)
    return 0


__all__ = [
    "DEFAULT_PORT",
    "VENDOR_PACKAGES",
    "bridge_command",
    "PyjemAdapter",
    "StoredSettings",
    "TemServer",
    "TemscriptAdapter",
    "make_adapter",
    "nearest_step",
    "serve_bridge",
]
