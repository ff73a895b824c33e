"""`insitem analyze` for runs without the LASGTP Fig. 6 windows: the seed experiments and Li-K-only runs.

Which analysis a run gets follows from its spectra, not from its protocol's name:

* ``particles`` - a window holding the plasmon region (8-30 eV) and Li-K whose first exposure has
  matter rows with a plasmon below 19.5 eV (Si, LixSi): the particle (cluster) width along the slit,
  the plasmon energy of the particle rows and their Li-K against time (analysis/particles.py), plus
  the electrochemical record's beam steps ([P3] Si nanoparticle hold);
* ``valence`` - a window holding 2.5-9 eV and Li-K with rows showing the Fe M2,3 rise: the 5 eV
  interband peak and Li-K of the electrode rows against time (analysis/valence.py), the CV's redox
  peaks (readings taken while the beam was on left out) and the beam-on current steps
  (analysis/voltammetry.py) ([P2] micro-battery). With a window holding the zero-loss peak (short
  exposures, e.g. at the vertices), the electrode rows' Li-K is taken per zero-loss count from the
  Fourier-log SSD (`analysis.lithium.li_k_per_zero_loss`, I0 from the zero-loss/inelastic ratio of
  the nearest such exposures in time); without one, per plasmon count from a power law on the
  recorded spectrum (valence.py), which the double plasmon under the pre-edge makes negative at
  t/lambda ~ 0.5;
* ``li-k`` - any window holding Li-K: the Li-K counts of every row (power-law background) of every
  exposure, relative to the first exposure (a Li profile along the slit against time).

Output: ``summary.json`` and figures in the output directory (see `write_seed_figures`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from insitem.acquisition.plotting import pyplot, save_figure
from insitem.acquisition.runfile_read import RunFileReader
from insitem.analysis.axes import AnalysisError, EnergyAxis
from insitem.analysis.background import edge_intensity
from insitem.analysis.lithium import li_k_per_zero_loss, zero_loss_ratio
from insitem.analysis.particles import ParticleParams, ParticleSeries, particle_series
from insitem.analysis.valence import ValenceParams, analyse_valence, electrode_rows
from insitem.analysis.voltammetry import BeamStep, Peak, PeakCandidate, beam_steps, peak_candidates

LI_PRE_EDGE_EV = (44.0, 53.0)
LI_SIGNAL_EV = (56.0, 70.0)
ZERO_LOSS_COUNTS_EV = (10.0, 97.0)  # counted in both windows to scale the zero-loss intensity (lithium.zero_loss_ratio)


def _covers(e: EnergyAxis, lo: float, hi: float) -> bool:
    return float(e.boundary_eV(0)) <= lo and float(e.boundary_eV(e.size)) >= hi


@dataclass
class SeedAnalysis:
    kind: str  # "particles", "valence" or "li-k"
    window: str
    t_s: np.ndarray
    potential_V: np.ndarray
    position_m: np.ndarray
    ec: dict[str, np.ndarray]
    exposure_start_s: np.ndarray
    exposure_s: np.ndarray
    particles: ParticleSeries | None = None
    peak5_ratio: np.ndarray | None = None
    li_k_ratio: np.ndarray | None = None  # electrode rows' Li-K: per zero-loss count, or per plasmon count (li_k_unit)
    li_k_unit: str = ""
    electrode_rows: np.ndarray | None = None
    li_k_rows: np.ndarray | None = None  # (exposure, row) Li-K counts relative to the first exposure's
    redox: list[Peak] = field(default_factory=list)
    cv_maxima: list[PeakCandidate] = field(default_factory=list)  # every sweep maximum tested (redox: the waves)
    steps: list[BeamStep] = field(default_factory=list)
    first_image: np.ndarray | None = None
    last_image: np.ndarray | None = None
    energy_eV: np.ndarray | None = None


def analyze_seed_file(path: Path, window_axes: Any) -> SeedAnalysis:
    """The analysis of a run without LASGTP Fig. 6 windows (see module docstring).

    ``window_axes(reader, name)`` gives a window's calibrated axes (analyze_run.window_axes)."""
    with RunFileReader(path) as r:
        candidates = []
        for name in r.windows:
            ax = window_axes(r, name)
            if r.n_exposures(name) and _covers(ax.energy, LI_PRE_EDGE_EV[0], 80.0):
                candidates.append(ax)
        if not candidates:
            raise AnalysisError(f"needs a window holding Li-K (44-80 eV) with exposures; the file has {r.windows}")
        ax = max(candidates, key=lambda c: r.n_exposures(c.name))  # the series, not a few zero-loss shots
        n = r.n_exposures(ax.name)
        recs = r.exposure_records(ax.name)
        images = [np.asarray(r.exposure(ax.name, k), float) for k in range(n)]
        ec = r.electrochemistry()
        zl = None  # (start times, images, axes) of a window holding the zero-loss peak
        for name in r.windows:
            zax = window_axes(r, name)
            if (name != ax.name and r.n_exposures(name) and _covers(zax.energy, -1.0, ZERO_LOSS_COUNTS_EV[1])
                    and zax.position.size == ax.position.size):
                zl = (np.asarray(r.exposure_records(name)["t_start_s"], float),
                      [np.asarray(r.exposure(name, k), float) for k in range(r.n_exposures(name))], zax)
                break
    t = np.asarray(recs["t_start_s"], float) + 0.5 * np.asarray(recs["exposure_s"], float)
    common = dict(window=ax.name, t_s=t, potential_V=np.asarray(recs["potential_V"], float),
                  position_m=ax.position.values_m, ec=ec, exposure_start_s=np.asarray(recs["t_start_s"], float),
                  exposure_s=np.asarray(recs["exposure_s"], float), first_image=images[0], last_image=images[-1],
                  energy_eV=ax.energy.values_eV)
    steps = []
    if ec["t_s"].size > 4:
        with np.errstate(all="ignore"):
            steps = beam_steps(ec["t_s"], ec["current_A"], ec["voltage_V"], recs["t_start_s"], recs["exposure_s"])
    e = ax.energy
    pp = ParticleParams()
    if _covers(e, pp.plasmon_eV[0], pp.plasmon_eV[1]):
        with np.errstate(all="ignore"):
            ps = particle_series(images, t, e, ax.position, pp)
        if ps.frames[0].width_m > 0:
            return SeedAnalysis("particles", particles=ps, steps=steps, **common)
    vp = ValenceParams()
    if _covers(e, vp.peak_baseline_eV[0][0], vp.plasmon_eV[1]):
        rows = electrode_rows(images[0], e, vp)
        if rows.sum() >= 3:
            with np.errstate(all="ignore"):
                frames = [analyse_valence(img, e, rows, vp) for img in images]
                beam_on = np.zeros(ec["t_s"].size, bool)
                for t0, dur in zip(recs["t_start_s"], recs["exposure_s"]):
                    beam_on |= (ec["t_s"] > t0) & (ec["t_s"] <= t0 + dur)
                maxima = peak_candidates(ec["voltage_V"], ec["current_A"], exclude=beam_on) if ec["t_s"].size > 20 else []
                redox = [c.peak for c in maxima if c.is_wave]
                li_k, unit = np.array([f.li_k_ratio for f in frames]), "per plasmon count (power law on the recorded spectrum)"
                if zl is not None and _covers(e, ZERO_LOSS_COUNTS_EV[0], ZERO_LOSS_COUNTS_EV[1]):
                    tz, zimgs, zax = zl
                    ratio = zero_loss_ratio(np.array([z[rows].sum(axis=0) for z in zimgs]), zax.energy,
                                            counts_eV=ZERO_LOSS_COUNTS_EV)
                    ok = np.isfinite(ratio) & (ratio > 0)
                    if ok.any():
                        at = np.interp(t, tz[ok], ratio[ok])
                        spectra = np.array([img[rows].sum(axis=0) for img in images])
                        li_k = li_k_per_zero_loss(spectra, e, at, counts_eV=ZERO_LOSS_COUNTS_EV, pre_edge_eV=vp.li_pre_edge_eV,
                                                  signal_eV=vp.li_signal_eV).per_zero_loss
                        unit = "per zero-loss count (Fourier-log SSD)"
            return SeedAnalysis("valence", peak5_ratio=np.array([f.peak5_ratio for f in frames]),
                                li_k_ratio=li_k, li_k_unit=unit, electrode_rows=rows,
                                redox=redox, cv_maxima=maxima, steps=steps, **common)
    with np.errstate(all="ignore"):
        counts = np.array([edge_intensity(img, e, LI_PRE_EDGE_EV, LI_SIGNAL_EV).intensity for img in images])
        ref = counts[0]
        scale = float(np.median(np.abs(ref[np.isfinite(ref)]))) or 1.0
        rel = counts / scale
    return SeedAnalysis("li-k", li_k_rows=rel, steps=steps, **common)


def _num(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def seed_summary_json(a: SeedAnalysis, run_file: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"run_file": str(run_file), "analysis": a.kind, "window": a.window}
    series: list[dict[str, Any]] = []
    for k, t in enumerate(a.t_s):
        row: dict[str, Any] = {"index": k, "t_s": float(t), "potential_V": _num(float(a.potential_V[k]))}
        if a.particles is not None:
            f = a.particles.frames[k]
            row.update(width_m=_num(f.width_m), plasmon_eV=_num(f.host_plasmon_eV), li_k_counts_per_row=_num(f.li_k_per_row))
        if a.peak5_ratio is not None and a.li_k_ratio is not None:
            row.update(peak_5eV_ratio=_num(float(a.peak5_ratio[k])), li_k_ratio=_num(float(a.li_k_ratio[k])))
        if a.li_k_rows is not None:
            row.update(li_k_mean_rel=_num(float(np.nanmean(a.li_k_rows[k]))))
        series.append(row)
    out["series"] = series
    if a.particles is not None:
        ps = a.particles
        out["width_first_m"] = _num(float(ps.width_m[0]))
        out["width_last_m"] = _num(float(ps.width_m[-1]))
        out["plasmon_first_eV"] = _num(float(ps.plasmon_eV[0]))
        out["plasmon_last_eV"] = _num(float(ps.plasmon_eV[-1]))
    if a.kind == "valence":
        out["redox_peaks"] = [{"potential_V": p.potential_V, "current_A": p.current_A, "prominence_A": p.prominence_A,
                               "above_baseline_A": p.excess_A, "sweep": p.sweep} for p in a.redox]
        out["cv_maxima_not_waves"] = [{"potential_V": c.peak.potential_V, "current_A": c.peak.current_A,
                                       "above_baseline_A": c.peak.excess_A, "needed_A": c.need_A, "sweep": c.peak.sweep}
                                      for c in a.cv_maxima if not c.is_wave]
        out["electrode_rows"] = int(np.count_nonzero(a.electrode_rows))
        out["li_k_unit"] = a.li_k_unit
    out["beam_steps"] = [{"t_start_s": s.t_start_s, "potential_V": s.potential_V, "step_A": _num(s.step_A),
                          "sigma_A": _num(s.sigma_A)} for s in a.steps]
    return out


def seed_headline(a: SeedAnalysis) -> str:
    if a.particles is not None:
        ps = a.particles
        return (f"particle width {ps.width_m[0] * 1e9:.0f} -> {ps.width_m[-1] * 1e9:.0f} nm, plasmon "
                f"{ps.plasmon_eV[0]:.2f} -> {ps.plasmon_eV[-1]:.2f} eV over {len(ps.t_s)} exposures")
    if a.kind == "valence":
        assert a.peak5_ratio is not None and a.li_k_ratio is not None
        return (f"{len(a.redox)} redox peaks in the CV; electrode rows: 5 eV peak {a.peak5_ratio[0]:.4f} -> "
                f"{a.peak5_ratio[-1]:.4f} (per plasmon count), Li-K {a.li_k_ratio[0]:.4g} -> {a.li_k_ratio[-1]:.4g} "
                f"({a.li_k_unit.split(' (')[0]})")
    assert a.li_k_rows is not None
    return f"Li-K along the slit for {a.li_k_rows.shape[0]} exposures (relative to the first)"


# -------------------------------------------------------------------------------------------------
# figures


def _against_time(plt: Any, t: np.ndarray, title: str, panels: list[tuple[np.ndarray, str, dict[str, Any]]]) -> tuple[Any, Any]:
    """One panel per (values, y label, line style) against time from the first exposure, stacked."""
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 8), sharex=True)
    for ax, (values, label, style) in zip(axes, panels):
        ax.plot(t, values, lw=0.8, **style)
        ax.set_ylabel(label)
    axes[0].set_title(title)
    axes[-1].set_xlabel("time from the first exposure (s)")
    return fig, axes


def write_seed_figures(a: SeedAnalysis, out_dir: Path, title: str) -> list[Path]:
    """Figures of a seed analysis: the quantities against time, and a map along the slit."""
    from insitem.acquisition.display_units import current_scale

    plt = pyplot()
    written: list[Path] = []
    t = a.t_s - (a.t_s[0] if a.t_s.size else 0.0)

    def save(fig: Any, name: str) -> None:
        written.append(save_figure(fig, out_dir / name))

    if a.particles is not None:
        ps = a.particles
        fig, axes = _against_time(plt, t, f"{title}: particle cluster against time (from the spectra)", [
            (ps.width_m * 1e9, "width along slit (nm)", dict(marker="o", ms=3)),
            (ps.plasmon_eV, "plasmon of particle rows (eV)", dict(marker="o", ms=3, color="tab:purple")),
            (ps.li_k_per_row, "Li-K counts per particle row", dict(marker="o", ms=3, color="tab:green")),
        ])
        ax_v = axes[0].twinx()
        ax_v.plot(t, a.potential_V, color="0.6", lw=0.8, ls="--")
        ax_v.set_ylabel("potential (V)", color="0.5")
        save(fig, "particles-vs-time.png")

        ep = np.array([np.where(f.matter, f.plasmon_eV, np.nan) for f in ps.frames])
        fig, ax = plt.subplots(figsize=(8, 4.5))
        im = ax.pcolormesh(a.position_m * 1e9, t, ep, shading="nearest", cmap="viridis", vmin=10, vmax=24)
        fig.colorbar(im, ax=ax, label="plasmon energy (eV)")
        ax.set_xlabel("position along the slit (nm)")
        ax.set_ylabel("time (s)")
        ax.set_title(f"{title}: plasmon energy along the slit (matter rows)")
        save(fig, "plasmon-map.png")

    if a.kind == "valence" and a.peak5_ratio is not None and a.li_k_ratio is not None:
        fig, axes = _against_time(plt, t, f"{title}: electrode rows against time (from the spectra)", [
            (a.potential_V, "potential (V)", dict(marker=".", color="0.4")),
            (a.peak5_ratio, "5 eV peak / plasmon counts", dict(marker="o", ms=3, color="tab:red")),
            (a.li_k_ratio, "Li-K " + a.li_k_unit.split(" (")[0].replace("count", "c."), dict(marker="o", ms=3, color="tab:green")),
        ])
        save(fig, "electrode-vs-time.png")

        if a.first_image is not None and a.last_image is not None and a.energy_eV is not None and a.electrode_rows is not None:
            fig, ax = plt.subplots(figsize=(8, 4.5))
            for img, label in ((a.first_image, "first exposure"), (a.last_image, "last exposure")):
                sp = img[a.electrode_rows].mean(axis=0)
                ax.plot(a.energy_eV, sp / max(float(sp.max()), 1e-12), lw=0.8, label=label)
            ax.set_yscale("log")
            ax.set_xlabel("energy loss (eV)")
            ax.set_ylabel("counts (normalised)")
            ax.set_title(f"{title}: electrode rows, first and last low-loss spectra (cf. [P2] Fig. 6a)")
            ax.legend(fontsize=8)
            save(fig, "electrode-spectra.png")

    if a.li_k_rows is not None:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        im = ax.pcolormesh(a.position_m * 1e9, t, a.li_k_rows, shading="nearest", cmap="viridis")
        fig.colorbar(im, ax=ax, label="Li-K counts / median of the first exposure")
        ax.set_xlabel("position along the slit (nm)")
        ax.set_ylabel("time (s)")
        ax.set_title(f"{title}: Li-K along the slit against time")
        save(fig, "li-k-map.png")

    if a.steps:
        st = np.array([s.step_A for s in a.steps])
        sg = np.array([s.sigma_A for s in a.steps])
        scale, unit = current_scale(float(np.nanmax(np.abs(st))) if np.isfinite(st).any() else 1e-12)
        fig, ax = plt.subplots(figsize=(7, 4.5))
        ax.errorbar([s.potential_V for s in a.steps], st / scale, yerr=sg / scale, fmt="o", ms=4, lw=0.8)
        ax.axhline(0.0, color="0.5", lw=0.6)
        ax.set_xlabel("potential during the exposure (V)")
        ax.set_ylabel(f"beam-on current step ({unit})")
        ax.set_title(f"{title}: current change while the beam is on (each exposure)")
        save(fig, "beam-steps.png")

    if a.kind == "valence" and a.ec["t_s"].size:
        scale, unit = current_scale(float(np.max(np.abs(a.ec["current_A"]))))
        fig, ax = plt.subplots(figsize=(7, 5))
        ax.plot(a.ec["voltage_V"], a.ec["current_A"] / scale, lw=0.5, color="0.3")
        waves = [c for c in a.cv_maxima if c.is_wave]
        edges = [c for c in a.cv_maxima if not c.is_wave]
        for group, color, marker, label in ((waves, "tab:red", "v", "redox peak (above its baseline)"),
                                            (edges, "tab:blue", "o", "maximum on its own baseline: no wave")):
            for k, c in enumerate(group):
                ax.plot(c.baseline_V, np.asarray(c.baseline_A) / scale, ls="--", lw=1.0, color=color)
                ax.plot(c.peak.potential_V, c.peak.current_A / scale, marker, color=color, ms=8, mfc="none" if not c.is_wave else color,
                        label=label if k == 0 else None)
        if a.cv_maxima:
            ax.legend(fontsize=8, title="dashed: baseline before the wave", title_fontsize=8)
        ax.set_xlabel("cell voltage (V)")
        ax.set_ylabel(f"current ({unit})")
        ax.set_title(f"{title}: CV, redox peaks found: {len(a.redox)} (search without the beam-on readings)")
        save(fig, "cv-peaks.png")
    return written
