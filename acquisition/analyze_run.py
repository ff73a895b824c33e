"""The analysis of a run file (`insitem analyze`, `insitem.api.analyze`): the paper's Fig. 6 as
numbers (the summary.json dict) and PNG figures.

Reads the run file through `RunFileReader` (works on a live or crashed file), picks the window
holding the Li-K edge and the one holding Ti-L2,3 + O-K by their energy ranges, and runs
`insitem.analysis.summarize` on the latest pair of exposures ([Y14] Fig. 6: Li profile with the
Ti3+/Ti4+ regions, O-O distance profile, spectra of chosen regions). When the Li window holds
several exposures (in-situ series) each one is analysed with `li_profile` (geometry from the
latest core exposure) and a time x position map of c/c0 and the Li near Pt against potential are
drawn.

Figures: ``fig6-li-profile.png``, ``fig6-oo-distance.png``, ``fig6-spectra.png``, and for series
``li-vs-time.png``, ``li-near-pt-vs-potential.png``. A file without what the analysis needs (no
exposures, windows without the edges) raises `AnalyzeInputError`.

Runs without those two windows (the Si nanoparticle hold, the LFP | LAGP | LVP micro-battery, Li-K-only
runs) get the analysis of acquisition/analyze_seeds.py instead, chosen from their spectra.

A window that holds the zero-loss peak, when the run has one, is the low-loss exposure each Li-K
exposure is spliced onto and deconvolved with (the latest one taken before it; analysis/deconvolution.py).

Positions: the file's position axis is the distance along the slit from its first edge (nm);
the analysis reports distances from the Pt interface it locates from the Ti-L2,3 counts. When the
run tracked drift (its drift table, docs/drift.md), every Li-K image of the series is placed on the
specimen's own coordinate: the interface found in the latest Ti-L/O-K image is moved by how far the
specimen's image sat from there when the Li-K image was taken (`image_offset_m`: the measured drift
interpolated in time, less the correction in force), so "Li near Pt" is read at the same place of
the specimen in every image, corrected or not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from insitem.acquisition.analyze_seeds import SeedAnalysis, analyze_seed_file, seed_headline, seed_summary_json, write_seed_figures
from insitem.acquisition.drift_report import drift_summary, image_offset_m
from insitem.acquisition.plotting import pyplot, save_figure
from insitem.acquisition.runfile_read import RunFileReader
from insitem.analysis import (
    AnalysisError,
    EnergyAxis,
    Fig6Summary,
    LiParams,
    PositionAxis,
    SlitGeometry,
    SummaryParams,
    li_profile,
    summarize,
)

NEAR_PT_M = (0.0, 50e-9)  # "Li near Pt": mean c/c0 over the first 50 nm of electrolyte (a stated choice)


class AnalyzeInputError(Exception):
    """Input `analyze` cannot work with (one line for the user)."""


@dataclass(frozen=True)
class WindowAxes:
    name: str
    energy: EnergyAxis
    position: PositionAxis


def window_axes(reader: RunFileReader, window: str) -> WindowAxes:
    """Energy and position calibrations of a window as the file declares them (position in m)."""
    w = reader.window_spec(window)
    energy = EnergyAxis(offset_eV=w.energy_offset_eV, scale_eV=w.dispersion_eV_per_channel, size=w.n_channels)
    unit = {"nm": 1e-9, "m": 1.0, "um": 1e-6, "µm": 1e-6}.get(w.position_units)
    if unit is None:
        raise AnalyzeInputError(f"window {window!r}: position units {w.position_units!r} not understood")
    position = PositionAxis(offset_m=w.position_offset * unit, scale_m=abs(w.position_scale) * unit, size=w.n_rows)
    return WindowAxes(window, energy, position)


def _covers(e: EnergyAxis, lo: float, hi: float) -> bool:
    return float(e.boundary_eV(0)) <= lo and float(e.boundary_eV(e.size)) >= hi


def _holds_zlp(e: EnergyAxis) -> bool:
    return _covers(e, -1.0, 1.0)


def pick_lowloss(reader: RunFileReader) -> WindowAxes | None:
    """The window that holds the zero-loss peak (for the Li-K deconvolution), or None."""
    for name in reader.windows:
        ax = window_axes(reader, name)
        if _holds_zlp(ax.energy):
            return ax
    return None


def _lowloss_before(reader: RunFileReader, ll: WindowAxes | None, t_s: float) -> tuple[np.ndarray, EnergyAxis] | None:
    """The latest zero-loss-window exposure started at or before `t_s` (else the first one), or None."""
    if ll is None or reader.n_exposures(ll.name) == 0:
        return None
    starts = reader.exposure_records(ll.name)["t_start_s"]
    k = int(np.searchsorted(starts, t_s, side="right")) - 1
    return np.asarray(reader.exposure(ll.name, max(k, 0)), float), ll.energy


def pick_windows(reader: RunFileReader, params: SummaryParams) -> tuple[WindowAxes, WindowAxes]:
    """(Li-K window, Ti-L2,3/O-K window) by energy range; AnalyzeInputError when either is missing.

    A window that holds the zero-loss peak is not taken as the Li-K window (it is the low-loss
    exposure the Li-K window is deconvolved with)."""
    low = core = None
    for name in reader.windows:
        ax = window_axes(reader, name)
        if _holds_zlp(ax.energy):
            continue
        if low is None and _covers(ax.energy, params.li.pre_edge_eV[0], params.li.signal_eV[1]):
            low = ax
        if core is None and _covers(ax.energy, params.ti.pre_edge_eV[0], params.o.peak_b_window_eV[1]):
            core = ax
    if low is None or core is None:
        raise AnalyzeInputError(
            f"needs a Li-K window ({params.li.pre_edge_eV[0]:g}-{params.li.signal_eV[1]:g} eV) and a Ti-L/O-K window "
            f"({params.ti.pre_edge_eV[0]:g}-{params.o.peak_b_window_eV[1]:g} eV); the file has {reader.windows}"
        )
    return low, core


@dataclass(frozen=True)
class SeriesPoint:
    index: int
    t_s: float
    potential_V: float
    c_rel: np.ndarray
    near_pt: float
    c_max: float
    electrode_width_m: float
    interface_m: float  # where the analysis placed the Pt/electrolyte interface in this image (position axis)


@dataclass(frozen=True)
class Analysis:
    summary: Fig6Summary
    low: WindowAxes
    core: WindowAxes
    low_image: np.ndarray
    core_image: np.ndarray
    series: list[SeriesPoint]


def near_pt(distance_m: np.ndarray, c_rel: np.ndarray, band_m: tuple[float, float] = NEAR_PT_M) -> float:
    """Mean c/c0 over the electrolyte rows within `band_m` of Pt (NaN when there are none)."""
    sel = (distance_m >= band_m[0]) & (distance_m <= band_m[1]) & np.isfinite(c_rel)
    return float(np.mean(c_rel[sel])) if sel.any() else float("nan")


def analyze_file(path: Path, params: SummaryParams | None = None, specimen_coordinate: bool = True) -> Analysis:
    """Fig. 6 summary of the latest exposures plus the Li series of every Li-K exposure, each image
    placed on the specimen's own coordinate from the run's drift record when it has one
    (`specimen_coordinate`; False: every image with the latest Ti-L/O-K image's interface)."""
    p = params or SummaryParams()
    with RunFileReader(path) as r:
        low, core = pick_windows(r, p)
        n_low, n_core = r.n_exposures(low.name), r.n_exposures(core.name)
        if n_low == 0 or n_core == 0:
            raise AnalyzeInputError(f"no exposures to analyse ({low.name}: {n_low}, {core.name}: {n_core})")
        low_img = np.asarray(r.exposure(low.name, -1), float)
        core_img = np.asarray(r.exposure(core.name, -1), float)
        ll = pick_lowloss(r)
        recs = r.exposure_records(low.name)
        ll_last = _lowloss_before(r, ll, float(recs["t_start_s"][n_low - 1]))
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):  # rows without signal give NaN, reported as null
            summary = summarize(low_img, low.energy, core_img, core.energy, low.position, params=p, lowloss=ll_last)
        series: list[SeriesPoint] = []
        if n_low > 1:
            geometry: SlitGeometry = summary.geometry
            mid_s = recs["t_start_s"][:n_low] + 0.5 * recs["exposure_s"][:n_low]
            core_recs = r.exposure_records(core.name)
            core_mid_s = float(core_recs["t_start_s"][n_core - 1] + 0.5 * core_recs["exposure_s"][n_core - 1])
            offsets = image_offset_m(r.drift(), mid_s, core_mid_s) if specimen_coordinate else None
            if offsets is None or not np.all(np.isfinite(offsets)):
                offsets = np.zeros(n_low)
            for i in range(n_low):
                img = np.asarray(r.exposure(low.name, i), float)
                here = SlitGeometry(interface_m=geometry.interface_m + float(offsets[i]), pt_side=geometry.pt_side)
                with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
                    lp = li_profile(img, low.energy, low.position, here, p.li,
                                    lowloss=_lowloss_before(r, ll, float(recs["t_start_s"][i])))
                series.append(
                    SeriesPoint(
                        index=i,
                        t_s=float(mid_s[i]),
                        potential_V=float(recs["potential_V"][i]),
                        c_rel=lp.c_rel,
                        near_pt=near_pt(lp.distance_m, lp.c_rel),
                        c_max=lp.c_max,
                        electrode_width_m=lp.electrode_width_m,
                        interface_m=here.interface_m,
                    )
                )
    return Analysis(summary, low, core, low_img, core_img, series)


def _num(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def summary_json(a: Analysis, run_file: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"run_file": str(run_file), "li_window": a.low.name, "core_window": a.core.name}
    out.update(a.summary.to_dict())
    if a.series:
        out["series"] = [
            {
                "index": s.index,
                "t_s": s.t_s,
                "potential_V": _num(s.potential_V),
                "li_near_pt_c_rel": _num(s.near_pt),
                "c_max": _num(s.c_max),
                "electrode_width_m": _num(s.electrode_width_m),
                "interface_m": _num(s.interface_m),
            }
            for s in a.series
        ]
    out.update(drift_summary(run_file))
    return out


# -------------------------------------------------------------------------------------------------
# figures


def _shade_ti(ax: Any, s: Fig6Summary) -> None:
    d = s.ti.distance_m * 1e9
    step = float(np.median(np.abs(np.diff(d)))) if d.size > 1 else 1.0
    for k in np.flatnonzero(np.isfinite(s.ti.shift_eV)):
        ax.axvspan(d[k] - step / 2, d[k] + step / 2, color="tab:orange" if s.ti.is_ti3[k] else "tab:blue", alpha=0.12, lw=0)


def _at_distance(distance_m: np.ndarray, values: np.ndarray, at_m: np.ndarray) -> np.ndarray:
    """`values` given at `distance_m`, linearly interpolated at `at_m` (NaN outside)."""
    order = np.argsort(distance_m)
    return np.interp(at_m, distance_m[order], values[order], left=np.nan, right=np.nan)


def write_figures(a: Analysis, out_dir: Path, title: str) -> list[Path]:
    plt = pyplot()
    s = a.summary
    written: list[Path] = []
    d_nm = s.li.distance_m * 1e9

    # rows on the Pt side of the interface hold no electrolyte: their c/c0 is not a Li concentration
    el = s.li.distance_m >= 0
    fig, ax = plt.subplots(figsize=(8, 4.5))
    _shade_ti(ax, s)
    if (~el).any():
        ax.axvspan(d_nm[~el].min(), 0.0, color="0.85", lw=0)
        ax.text(0.01, 0.97, "Pt side", transform=ax.transAxes, va="top", fontsize=8, color="0.3")
    ax.plot(d_nm, np.where(el, s.li.c_rel, np.nan), color="k", lw=1)
    ax.axhline(1.0, color="0.5", lw=0.6, ls=":")
    ax.axvline(0.0, color="0.3", lw=0.8)
    ax.set_xlabel("distance from Pt (nm)")
    ax.set_ylabel("Li c/c0")
    ax.set_title(f"{title}: Li profile (orange: Ti3+, blue: Ti4+); max {s.c_max:.2f} c0, width {s.electrode_width_m * 1e9:.0f} nm", fontsize=9)
    written.append(save_figure(fig, out_dir / "fig6-li-profile.png"))

    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(d_nm, s.o.oo_distance_m * 1e9, ".-", ms=3, lw=0.7)
    ax.set_xlabel("distance from Pt (nm)")
    ax.set_ylabel("O-O distance (nm)")
    ax.set_title(f"{title}: O-O distance from O-K peak b")
    written.append(save_figure(fig, out_dir / "fig6-oo-distance.png"))

    regions = {
        "parent electrolyte": s.li.parent_rows,
        "electrode near Pt (0-50 nm)": (s.li.distance_m >= 0) & (s.li.distance_m <= 50e-9),
        "around the Ti boundary": np.abs(s.li.distance_m - s.ti3_boundary_m) <= 15e-9,
    }
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    E_low, E_core = a.low.energy.values_eV, a.core.energy.values_eV
    for label, rows in regions.items():
        if not rows.any():
            continue
        lo_sp = a.low_image[rows].mean(axis=0)
        co_sp = a.core_image[rows].mean(axis=0)
        m_lo = (E_low >= 40) & (E_low <= 90)
        m_ti = (E_core >= 450) & (E_core <= 475)
        m_o = (E_core >= 525) & (E_core <= 580)
        axes[0].plot(E_low[m_lo], lo_sp[m_lo] / lo_sp[m_lo].max(), lw=0.8, label=label)
        axes[1].plot(E_core[m_ti], co_sp[m_ti] / max(co_sp[m_ti].max(), 1e-12), lw=0.8, label=label)
        axes[2].plot(E_core[m_o], co_sp[m_o] / max(co_sp[m_o].max(), 1e-12), lw=0.8, label=label)
    for axx, t in zip(axes, ("Li-K", "Ti-L2,3", "O-K")):
        axx.set_title(t)
        axx.set_xlabel("energy loss (eV)")
    axes[0].set_ylabel("counts (normalised)")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{title}: spectra of chosen regions")
    written.append(save_figure(fig, out_dir / "fig6-spectra.png"))

    if a.series:
        t_h = np.array([p.t_s for p in a.series]) / 3600
        # each image on the specimen's coordinate: its c/c0 at the summary's distances from Pt
        sign = 1.0 if s.geometry.pt_side == "low" else -1.0
        x = a.low.position.values_m
        c_rel = np.array([np.where(el, _at_distance(sign * (x - p.interface_m), p.c_rel, s.li.distance_m), np.nan)
                          for p in a.series])
        fig, ax = plt.subplots(figsize=(8, 4.5))
        im = ax.pcolormesh(d_nm[el], t_h, c_rel[:, el], shading="nearest", cmap="viridis")
        fig.colorbar(im, ax=ax, label="Li c/c0")
        ax.set_xlabel("distance from Pt (nm)")
        ax.set_ylabel("time (h)")
        ax.set_title(f"{title}: Li profile against time")
        written.append(save_figure(fig, out_dir / "li-vs-time.png"))

        fig, ax = plt.subplots(figsize=(6, 4.5))
        v = np.array([p.potential_V for p in a.series])
        c = np.array([p.near_pt for p in a.series])
        ax.plot(v, c, "o-", ms=4, lw=0.8)
        ax.set_xlabel("cell potential (V)")
        ax.set_ylabel(f"Li near Pt ({NEAR_PT_M[1] * 1e9:.0f} nm), c/c0")
        ax.set_title(f"{title}: Li near Pt vs potential")
        written.append(save_figure(fig, out_dir / "li-near-pt-vs-potential.png"))
    return written


def analyze_any(run_file: Path) -> Analysis | SeedAnalysis:
    """The Fig. 6 analysis of a run file or, for runs without its two windows (the seed
    experiments, Li-K-only runs), the analysis of acquisition/analyze_seeds.py chosen from the
    spectra. AnalyzeInputError (naming both reasons) when neither applies."""
    try:
        return analyze_file(run_file)
    except AnalyzeInputError as fig6_exc:
        try:
            return analyze_seed_file(run_file, window_axes)
        except AnalysisError as exc:
            raise AnalyzeInputError(f"{fig6_exc}; {exc}") from exc


def summary_of(a: Analysis | SeedAnalysis, run_file: Path) -> dict[str, Any]:
    """What summary.json holds of either analysis."""
    return seed_summary_json(a, run_file) if isinstance(a, SeedAnalysis) else summary_json(a, run_file)


def figures_of(a: Analysis | SeedAnalysis, out_dir: Path, title: str) -> list[Path]:
    """Either analysis's PNG figures, written to `out_dir` (made if missing)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return write_seed_figures(a, out_dir, title) if isinstance(a, SeedAnalysis) else write_figures(a, out_dir, title)


def headline(a: Analysis | SeedAnalysis) -> str:
    """One line of the main numbers."""
    if isinstance(a, SeedAnalysis):
        return f"{a.kind} analysis: {seed_headline(a)}"
    s = a.summary
    shift = f"{s.ti3_shift_eV:.2f} eV" if math.isfinite(s.ti3_shift_eV) else "-"
    return (
        f"Li max {s.c_max:.2f} c0, electrode width {s.electrode_width_m * 1e9:.0f} nm, Ti3+ boundary "
        f"{s.ti3_boundary_m * 1e9:.0f} nm (shift {shift}), O-O {s.oo_range_m[0] * 1e9:.3f}-{s.oo_range_m[1] * 1e9:.3f} nm"
        + (f"; {len(a.series)} Li-K exposures in the series" if a.series else "")
    )


__all__ = ["AnalyzeInputError", "Analysis", "LiParams", "analyze_any", "analyze_file", "figures_of", "headline", "near_pt",
           "pick_windows", "summary_json", "summary_of"]
