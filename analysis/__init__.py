"""SR-EELS analysis: pure functions from arrays + axis calibrations to results (design.md §3)."""

from insitem.analysis.alignment import edge_onset, image_drift, row_shifts, shift_rows, xcorr_shift
from insitem.analysis.axes import AnalysisError, EnergyAxis, PositionAxis
from insitem.analysis.background import (
    EdgeIntensity,
    PowerLawFit,
    Subtracted,
    edge_intensity,
    fit_power_law,
    power_law_integral,
    subtract_background,
)
from insitem.analysis.lithium import LiParams, LiProfile, li_profile
from insitem.analysis.oxygen import OParams, OResult, locate_peaks, o_analysis, oo_distance_m, peak_b_eV
from insitem.analysis.profiles import SlitGeometry, crossing_from_pt, locate_interface, parent_mask
from insitem.analysis.summary import Fig6Summary, SummaryParams, summarize
from insitem.analysis.titanium import TiParams, TiResult, ti_analysis

__all__ = [
    "AnalysisError",
    "EdgeIntensity",
    "EnergyAxis",
    "Fig6Summary",
    "LiParams",
    "LiProfile",
    "OParams",
    "OResult",
    "PositionAxis",
    "PowerLawFit",
    "SlitGeometry",
    "Subtracted",
    "SummaryParams",
    "TiParams",
    "TiResult",
    "crossing_from_pt",
    "edge_intensity",
    "edge_onset",
    "fit_power_law",
    "image_drift",
    "li_profile",
    "locate_interface",
    "locate_peaks",
    "o_analysis",
    "oo_distance_m",
    "parent_mask",
    "peak_b_eV",
    "power_law_integral",
    "row_shifts",
    "shift_rows",
    "subtract_background",
    "summarize",
    "ti_analysis",
    "xcorr_shift",
]
