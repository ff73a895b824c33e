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

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema


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
    """What a field measures: its SI unit, the pint dimensionality, a unit to show values in, an example."""

    def __init__(self, name: str, si_unit: str, example: str, display: str | None = None, display_per_si: float = 1.0) -> None:
        self.name = name
        self.si_unit = si_unit
        self.example = example
        self.display = display or si_unit
        self.display_per_si = display_per_si  # SI value x this = value in the display unit

    @functools.cached_property
    def dimensionality(self) -> Any:
        return registry()(self.si_unit).dimensionality


VOLTAGE = UnitKind("voltage", "V", "1.5 V")
CURRENT = UnitKind("current", "A", "1 mA")
CHARGE = UnitKind("charge", "C", "100 uC")
TIME = UnitKind("time", "s", "30 s")
LENGTH = UnitKind("length", "m", "1880 nm")
SWEEP_RATE = UnitKind("sweep rate", "V/s", "40 mV/min")
DRIFT_RATE = UnitKind("drift rate", "m/s", "1 nm/min")
ENERGY = UnitKind("energy", "eV", "420 eV")
DISPERSION = UnitKind("dispersion", "eV", "0.1 eV")  # per channel
DOSE_RATE = UnitKind("dose rate", "electron/m**2/s", "10 e/Å^2/s", display="e/Å^2/s", display_per_si=1e-20)
DOSE = UnitKind("dose", "electron/m**2", "1e5 e/Å^2", display="e/Å^2", display_per_si=1e-20)

#: longest quantity text read: '1.5 V' and '1e5 e/Å^2/s' are short, and a cap before parsing keeps
#: the time to reject a value independent of its length (pint's parser is not linear in it)
MAX_QUANTITY_CHARS = 64
#: longest excerpt of a user's value quoted back in an error message
QUOTE_CHARS = 40

# A count where a quantity belongs: `every: 2 cycles`, `exposure: 4 frames`.
_COUNT_WORDS = re.compile(r"^\s*[-+]?[\d.]+(?:[eE][-+]?\d+)?\s*(cycles?|frames?|points?|exposures?|images?|times?|steps?)\s*$", re.I)


def quote(value: Any, limit: int = QUOTE_CHARS) -> str:
    """`repr(value)`, cut to about `limit` characters so an error message stays one short line."""
    text = repr(value) if not isinstance(value, str) or len(value) <= limit else repr(value[:limit]) + f"... ({len(value)} characters)"
    return text if len(text) <= limit + 40 else text[:limit] + "..."


class Bounds:
    """The physically meaningful range of one field, in SI, with the reason for each end.

    `gt`/`ge` and `lt`/`le` are exclusive/inclusive ends; `why` says where the numbers come from
    (shown in the protocol format reference, docs/protocol-format.md).
    """

    def __init__(self, *, gt: float | None = None, ge: float | None = None, lt: float | None = None,
                 le: float | None = None, why: str = "") -> None:
        self.gt, self.ge, self.lt, self.le, self.why = gt, ge, lt, le, why

    def problem(self, value_si: float, kind: UnitKind) -> str | None:
        """None when `value_si` is inside the bounds, else the reason naming the bound."""
        if self.gt is not None and not value_si > self.gt:
            return f"must be > {show(self.gt, kind)}"
        if self.ge is not None and not value_si >= self.ge:
            return f"must be at least {show(self.ge, kind)}"
        if self.lt is not None and not value_si < self.lt:
            return f"must be < {show(self.lt, kind)}"
        if self.le is not None and not value_si <= self.le:
            return f"must be at most {show(self.le, kind)}"
        return None

    def describe(self, kind: UnitKind) -> str:
        lo = f"> {show(self.gt, kind)}" if self.gt is not None else f">= {show(self.ge, kind)}" if self.ge is not None else ""
        hi = f"< {show(self.lt, kind)}" if self.lt is not None else f"<= {show(self.le, kind)}" if self.le is not None else ""
        return ", ".join(x for x in (lo, hi) if x)


_DAY_S = 86400.0


def show(value_si: float, kind: UnitKind) -> str:
    """An SI value in the kind's display unit; long times also in hours or days."""
    if kind is TIME and abs(value_si) >= 7200:
        unit, scale = ("days", _DAY_S) if abs(value_si) >= 2 * _DAY_S else ("h", 3600.0)
        return f"{value_si / scale:.4g} {unit} ({value_si:.4g} s)"
    return f"{value_si * kind.display_per_si:.4g} {kind.display}"  # no pint here: show() runs at import


def parse_quantity(value: Any, kind: UnitKind, bounds: Bounds | None = None, count_hint: str = "") -> float:
    """Parse `value` ("40 mV/min") into a float in the SI unit of `kind`, inside `bounds`.

    Raises ValueError with a one-line message naming the expected unit or the bound it broke.
    `count_hint` is added when a count ("2 cycles") is given where the quantity is expected.
    """
    if isinstance(value, bool) or value is None:
        raise ValueError(f"expected a {kind.name} with a unit, e.g. '{kind.example}'")
    if isinstance(value, (int, float)):
        raise ValueError(
            f"bare number {quote(value)}: a {kind.name} needs a unit, e.g. '{kind.example}' (stored in {kind.si_unit})"
        )
    if not isinstance(value, str):
        raise ValueError(f"expected a {kind.name} string with a unit, e.g. '{kind.example}', got {type(value).__name__}")
    if len(value) > MAX_QUANTITY_CHARS:
        raise ValueError(f"a {kind.name} is a short text like '{kind.example}' (at most {MAX_QUANTITY_CHARS} characters), got {len(value)} characters")
    count = _COUNT_WORDS.match(value)
    if count:
        raise ValueError(f"{quote(value)} is a count of {count.group(1).lower()}, not a {kind.name}" + (f": {count_hint}" if count_hint else f" (e.g. '{kind.example}')"))
    text = _ELECTRON_TOKEN.sub("electron", value.strip().replace("µ", "u").replace("μ", "u"))
    _check_powers(value, text, kind)
    ureg = registry()
    try:
        q = ureg.Quantity(text)
    except Exception as exc:  # pint raises several unrelated types for bad text
        raise ValueError(f"cannot read {quote(value)} as a {kind.name} (e.g. '{kind.example}'): {str(exc)[:80]}") from None
    try:
        if not isinstance(q, pint.Quantity) or q.dimensionless and kind.dimensionality:
            raise ValueError(f"{quote(value)} has no unit: a {kind.name} needs one, e.g. '{kind.example}'")
        if q.dimensionality != kind.dimensionality:
            hint = " ('A' is the ampere: write 'Å' or 'angstrom')" if re.search(r"\bA\^?2", text) else ""
            raise ValueError(f"{quote(value)} is not a {kind.name} (expected units like '{kind.example}'){hint}")
        value_si = float(q.to(kind.si_unit).magnitude)
    except ArithmeticError:  # e.g. an integer magnitude beyond the float range (OverflowError)
        value_si = math.inf
    if not math.isfinite(value_si):
        raise ValueError(f"{quote(value)} is not a finite {kind.name}")
    if bounds is not None:
        problem = bounds.problem(value_si, kind)
        if problem:
            raise ValueError(f"{problem}, got {quote(value)}")
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
        raise ValueError(f"cannot read {quote(value)} as a {kind.name} (e.g. '{kind.example}'): exponents must be numbers up to 99, not chained")


def format_quantity(value_si: float, unit: str, si_unit: str) -> str:
    """Render an SI value in a display unit, e.g. format_quantity(6.67e-4, 'mV/min', 'V/s')."""
    ureg = registry()
    q = ureg.Quantity(value_si, si_unit).to(_ELECTRON_TOKEN.sub("electron", unit).replace("Å", "angstrom"))
    return f"{q.magnitude:.4g} {unit}"


def quantity(kind: UnitKind, bounds: Bounds, count_hint: str = "") -> Any:
    """The pydantic type of a field holding a `kind` within `bounds`: text with a unit in, SI float out.

    The JSON Schema (protocols/protocol.schema.json) describes it as a string with the SI bounds
    in `x-si-minimum`/`x-si-maximum`, so editors show what is accepted.
    """
    schema: dict[str, Any] = {"type": "string", "maxLength": MAX_QUANTITY_CHARS, "examples": [kind.example],
                              "x-kind": kind.name, "x-si-unit": kind.si_unit}
    lo = bounds.gt if bounds.gt is not None else bounds.ge
    hi = bounds.lt if bounds.lt is not None else bounds.le
    if lo is not None:
        schema["x-si-minimum" if bounds.gt is None else "x-si-exclusive-minimum"] = lo
    if hi is not None:
        schema["x-si-maximum" if bounds.lt is None else "x-si-exclusive-maximum"] = hi
    schema["x-range"] = bounds.describe(kind) + (f" ({bounds.why})" if bounds.why else "")
    return Annotated[
        float,
        BeforeValidator(lambda v: parse_quantity(v, kind, bounds, count_hint)),
        PlainSerializer(lambda v: f"{v:.10g} {kind.si_unit.replace('electron', 'e').replace('**', '^')}"),
        WithJsonSchema(schema),
        QuantityInfo(kind, bounds),
    ]


class QuantityInfo:
    """Marks an annotated quantity field with its kind and bounds (read by the format reference)."""

    def __init__(self, kind: UnitKind, bounds: Bounds) -> None:
        self.kind, self.bounds = kind, bounds


E_PER_A2 = 1e20  # electrons per m² in one electron per Å²
