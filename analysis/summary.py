"""What the paper's Fig. 6 shows, from one low-window and one core-window spectrum image [Y14].

Li profile (c/c0 along the slit, maximum, electrode width), Ti3+ region with its boundary distance
from Pt and the Ti shift, O-O distance profile and its range. Optional drift correction: given a
reference spectrum (or image) per window, the common shift is measured by cross-correlation and
the axis recalibrated (physics.md §1.9); per-row non-isochromaticity is left to the caller
(`row_shifts` + `shift_rows`), because which rows are chemically unchanged depends on the sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from insitem.analysis.alignment import image_drift
from insitem.analysis.axes import EnergyAxis, PositionAxis
from insitem.analysis.background import edge_intensity
from insitem.analysis.lithium import LiParams, LiProfile, li_profile
from insitem.analysis.oxygen import OParams, OResult, o_analysis
from insitem.analysis.profiles import SlitGeometry, locate_interface
from insitem.analysis.titanium import TiParams, TiResult, ti_analysis


class SummaryParams(BaseModel):
    """Parameters of `summarize`: one block per edge plus drift windows."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    li: LiParams = Field(default_factory=LiParams)
    ti: TiParams = Field(default_factory=TiParams)
    o: OParams = Field(default_factory=OParams)
    pt_side: Literal["low", "high"] = Field(default="low", description="used when the interface is located from the Ti signal")
    low_drift_window_eV: tuple[float, float] = Field(default=(50.0, 80.0), description="cross-correlation window, low window")
    core_drift_window_eV: tuple[float, float] = Field(default=(450.0, 545.0), description="cross-correlation window, core window")


@dataclass(frozen=True)
class Fig6Summary:
    """The Fig. 6 quantities [Y14]; per-row detail in `li`, `ti`, `o`."""

    geometry: SlitGeometry
    low_shift_eV: float
    core_shift_eV: float
    li: LiProfile
    ti: TiResult
    o: OResult
    c_max: float
    electrode_width_m: float
    ti3_boundary_m: float
    ti3_shift_eV: float  # Ti3+ lines against the Ti4+ eg lines, summed Ti3+ rows (NaN when there are none)
    oo_range_m: tuple[float, float]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready numbers and per-row lists (NaN becomes None)."""

        def clean(a: np.ndarray) -> list[float | None]:
            return [None if not np.isfinite(v) else float(v) for v in np.asarray(a, float)]

        def num(v: float) -> float | None:
            return float(v) if np.isfinite(v) else None

        return {
            "interface_m": self.geometry.interface_m,
            "pt_side": self.geometry.pt_side,
            "low_shift_eV": self.low_shift_eV,
            "core_shift_eV": self.core_shift_eV,
            "c_max": self.c_max,
            "electrode_width_m": self.electrode_width_m,
            "li_parent_level": self.li.parent_level,
            "li_non_li_fraction": self.li.non_li_fraction,
            "ti3_boundary_m": self.ti3_boundary_m,
            "ti3_shift_eV": num(self.ti3_shift_eV),
            "oo_range_m": [num(self.oo_range_m[0]), num(self.oo_range_m[1])],
            "distance_m": clean(self.li.distance_m),
            "li_c_rel": clean(self.li.c_rel),
            "li_c_rel_sigma": clean(self.li.c_rel_sigma),
            "ti_shift_eV": clean(self.ti.shift_eV),
            "ti_l2_l3": clean(self.ti.l2_l3_ratio),
            "ti_f3": clean(self.ti.f3),
            "ti3": [bool(v) for v in self.ti.is_ti3],
            "o_peak_a_eV": clean(self.o.peak_a_eV),
            "o_peak_b_eV": clean(self.o.peak_b_eV),
            "oo_distance_m": clean(self.o.oo_distance_m),
            "oo_sigma_m": clean(self.o.oo_sigma_m),
        }


def summarize(
    low_image: np.ndarray,
    low_energy: EnergyAxis,
    core_image: np.ndarray,
    core_energy: EnergyAxis,
    position: PositionAxis,
    geometry: SlitGeometry | None = None,
    params: SummaryParams | None = None,
    low_reference: np.ndarray | None = None,
    core_reference: np.ndarray | None = None,
    lowloss: tuple[np.ndarray, EnergyAxis] | None = None,
) -> Fig6Summary:
    """Fig. 6 of [Y14] from a low-window (Li-K) and a core-window (Ti-L2,3 + O-K) spectrum image.

    geometry: where Pt is; None locates the interface from the Ti-L2,3 counts (absent in Pt).
    low_reference / core_reference: spectra or images of a reference exposure for drift correction.
    lowloss: (image, energy axis) of a zero-loss window exposure, for the Li-K deconvolution (lithium.py).
    """
    p = params or SummaryParams()
    low_shift = core_shift = 0.0
    if low_reference is not None:
        low_shift = image_drift(low_image, low_reference, low_energy, p.low_drift_window_eV)
        low_energy = low_energy.shifted(low_shift)
    if core_reference is not None:
        core_shift = image_drift(core_image, core_reference, core_energy, p.core_drift_window_eV)
        core_energy = core_energy.shifted(core_shift)
    if geometry is None:
        ti_counts = edge_intensity(core_image, core_energy, p.ti.pre_edge_eV, p.ti.edge_eV, p.ti.method).intensity
        geometry = locate_interface(ti_counts, position, p.pt_side)
    li = li_profile(low_image, low_energy, position, geometry, p.li, lowloss=lowloss)
    ti = ti_analysis(core_image, core_energy, position, geometry, p.ti)
    o = o_analysis(core_image, core_energy, position, geometry, p.o)
    ti3_shift = ti.ti3_shift_eV
    return Fig6Summary(
        geometry=geometry,
        low_shift_eV=low_shift,
        core_shift_eV=core_shift,
        li=li,
        ti=ti,
        o=o,
        c_max=li.c_max,
        electrode_width_m=li.electrode_width_m,
        ti3_boundary_m=ti.boundary_m,
        ti3_shift_eV=ti3_shift,
        oo_range_m=o.oo_range_m,
    )
