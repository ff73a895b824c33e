"""Quantities with units in protocol files, parsed with pint and stored in SI.

Protocol files say `40 mV/min`, `30 s`, `1880 nm`, `10 e/Å^2/s`; the schema stores V/s, s, m
and e/m²/s. A bare number for a dimensional field is an error that names the expected unit, so a
protocol can never mean milliseconds where it wrote seconds.
"""

from __future__ import annotations

import functools
import math
import re
import sys
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer


def _import_pint_without_dask() -> Any:
    """Import pint without letting it import dask.

    pint imports `dask.base` at import time whenever dask is installed (for Quantities that
    wrap dask arrays), which costs every `insitem` command about 6 MB of resident memory
    (docs/performance/dry-run.md); we only parse scalar quantities. While pint is imported,
    `sys.modules["dask"]` is None, so pint's `find_spec("dask")` reports it missing; the entry
    is removed afterwards, so dask (and hyperspy, which needs it) still imports normally later
    in the same process. If pint or dask is already imported this changes nothing.
    """
    if "pint" in sys.modules or "dask" in sys.modules:
        import pint

        return pint
    sys.modules["dask"] = None  # type: ignore[assignment]
    try:
        import pint
    finally:
        if sys.modules.get("dask", 0) is None:
            del sys.modules["dask"]
    return pint


pint = _import_pint_without_dask()

# Electrons are counted, not charged: `e` in a dose means one electron, not 1.6e-19 C.
_ELECTRON_TOKEN = re.compile(r"(?<![A-Za-z_])e(?=\s*(/|\*|$))|(?<![A-Za-z_])e-(?![A-Za-z0-9])")


@functools.cache
def registry() -> pint.UnitRegistry:
    ureg = pint.UnitRegistry(autoconvert_offset_to_baseunit=True)
    ureg.define("electron = [electron_count] = el")
    return ureg


class UnitKind:
    """What a field measures: its SI unit, the pint dimensionality and an example for errors."""

    def __init__(self, name: str, si_unit: str, example: str) -> None:
        self.name = name
        self.si_unit = si_unit
        self.example = example

    @functools.cached_property
    def dimensionality(self) -> Any:
        return registry()(self.si_unit).dimensionality


VOLTAGE = UnitKind("voltage", "V", "1.5 V")
CURRENT = UnitKind("current", "A", "1 mA")
TIME = UnitKind("time", "s", "30 s")
LENGTH = UnitKind("length", "m", "1880 nm")
SWEEP_RATE = UnitKind("sweep rate", "V/s", "40 mV/min")
ENERGY = UnitKind("energy", "eV", "420 eV")
DISPERSION = UnitKind("dispersion", "eV", "0.1 eV")  # per channel
DOSE_RATE = UnitKind("dose rate", "electron/m**2/s", "10 e/Å^2/s")
DOSE = UnitKind("dose", "electron/m**2", "1e5 e/Å^2")


def parse_quantity(value: Any, kind: UnitKind) -> float:
    """Parse `value` ("40 mV/min") into a float in the SI unit of `kind`.

    Raises ValueError with a one-line message naming the expected unit.
    """
    if isinstance(value, bool) or value is None:
        raise ValueError(f"expected a {kind.name} with a unit, e.g. '{kind.example}'")
    if isinstance(value, (int, float)):
        raise ValueError(
            f"bare number {value!r}: a {kind.name} needs a unit, e.g. '{kind.example}' (stored in {kind.si_unit})"
        )
    if not isinstance(value, str):
        raise ValueError(f"expected a {kind.name} string with a unit, e.g. '{kind.example}', got {type(value).__name__}")
    text = _ELECTRON_TOKEN.sub("electron", value.strip().replace("µ", "u").replace("μ", "u"))
    _check_powers(value, text, kind)
    ureg = registry()
    try:
        q = ureg.Quantity(text)
    except Exception as exc:  # pint raises several unrelated types for bad text
        raise ValueError(f"cannot read {value!r} as a {kind.name} (e.g. '{kind.example}'): {exc}") from None
    try:
        if not isinstance(q, pint.Quantity) or q.dimensionless and kind.dimensionality:
            raise ValueError(f"{value!r} has no unit: a {kind.name} needs one, e.g. '{kind.example}'")
        if q.dimensionality != kind.dimensionality:
            hint = " ('A' is the ampere: write 'Å' or 'angstrom')" if re.search(r"\bA\^?2", text) else ""
            raise ValueError(f"{value!r} is not a {kind.name} (expected units like '{kind.example}'){hint}")
        value_si = float(q.to(kind.si_unit).magnitude)
    except ArithmeticError:  # e.g. an integer magnitude beyond the float range (OverflowError)
        value_si = math.inf
    if not math.isfinite(value_si):
        raise ValueError(f"{value!r} is not a finite {kind.name}")
    return value_si


_POWER_OP = r"(?:\*\*|\^)"
_MAX_POWERS = 3  # 'e/Å^2/s' has one


def _check_powers(value: str, text: str, kind: UnitKind) -> None:
    """Refuse exponents pint would evaluate as huge integers ('9**9**9 V' would not finish)."""
    ops = re.findall(_POWER_OP, text)
    bad = len(ops) > _MAX_POWERS or re.search(_POWER_OP + r"\s*[-+]?\s*[(\d.]*\s*(?:\(|" + _POWER_OP + ")", text)
    for m in re.finditer(_POWER_OP + r"\s*[-+]?\s*([\d.]+)", text):
        try:
            bad = bad or abs(float(m.group(1))) > 99
        except ValueError:
            bad = True
    if bad:
        raise ValueError(f"cannot read {value!r} as a {kind.name} (e.g. '{kind.example}'): exponents must be numbers up to 99, not chained")


def format_quantity(value_si: float, unit: str, si_unit: str) -> str:
    """Render an SI value in a display unit, e.g. format_quantity(6.67e-4, 'mV/min', 'V/s')."""
    ureg = registry()
    q = ureg.Quantity(value_si, si_unit).to(unit)
    return f"{q.magnitude:.4g} {unit}"


def _annotated(kind: UnitKind) -> Any:
    return Annotated[
        float,
        BeforeValidator(lambda v: parse_quantity(v, kind)),
        PlainSerializer(lambda v: f"{v:.10g} {kind.si_unit.replace('electron', 'e').replace('**', '^')}"),
    ]


Voltage = _annotated(VOLTAGE)
Current = _annotated(CURRENT)
Duration = _annotated(TIME)
Length = _annotated(LENGTH)
SweepRate = _annotated(SWEEP_RATE)
Energy = _annotated(ENERGY)
Dispersion = _annotated(DISPERSION)
DoseRate = _annotated(DOSE_RATE)
Dose = _annotated(DOSE)

E_PER_A2 = 1e20  # electrons per m² in one electron per Å²
