"""The PNG figures of a run file (`insitem show`, and `insitem run` at its end) — CV curves coloured by cycle (a hold: current against
time with the exposures marked; currents in pA, nA, µA or mA by their size), each spectrum image
(energy x position, log intensity), the exposures marked on the potential-time trace, and for a
series of Li-K exposures (in-situ runs) the Li near Pt over the potential trace (the numbers of
`insitem analyze`'s series), and the specimen drift against time (acquisition/drift_report.py).

Reads through acquisition/runfile_read.py, so it works on a live (SWMR) file and on the file a
crashed run left.
"""

from __future__ import annotations

from typing import Any
from pathlib import Path

import numpy as np

from insitem.acquisition.display_units import current_scale
from insitem.acquisition.drift_report import drift_figure
from insitem.acquisition.plotting import pyplot, save_figure
from insitem.acquisition.runfile_read import RunFileReader

plt = pyplot()

MAX_EC_POINTS_PLOTTED = 200_000


def write_figures(run_file: Path, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with RunFileReader(run_file) as r:
        resumed = [e.t_s for e in r.events() if e.message.startswith("resumed run file")]
        ec = with_gaps(r.electrochemistry(), resumed)
        recs = r.exposure_records()
        truth = r.ground_truth()
        drift = r.drift()
        title = r.title or run_file.stem
        if ec["t_s"].size:
            if is_hold(ec):
                written.append(_hold_figure(ec, recs, title, out_dir / "current-time.png"))
            else:
                written.append(_cv_figure(ec, title, out_dir / "cv.png"))
            written.append(_trace_figure(ec, recs, title, out_dir / "potential-time.png"))
        for w in r.windows:
            n = r.n_exposures(w)
            if n:
                img = r.exposure(w, n - 1)
                written.append(
                    _image_figure(img, r.energy_axis_eV(w), r.position_axis(w), f"{title}: {w} (exposure {n - 1})", out_dir / f"si-{w}.png")
                )
    written.extend(drift_figure(drift, ec, title, out_dir / "drift-time.png"))
    if ec["t_s"].size:
        written.extend(_li_series_figure(run_file, ec, truth, title, out_dir / "li-near-pt-time.png"))
    return written


def _li_series_figure(
    run_file: Path, ec: dict[str, np.ndarray], truth: dict[str, np.ndarray] | None, title: str, path: Path
) -> list[Path]:
    """Li near Pt of every Li-K exposure (`insitem analyze`'s series) over the potential trace, and for
    a simulated run the simulator's truth at the same instants; nothing for runs with fewer than two
    Li-K exposures or without the windows the analysis needs."""
    from insitem.acquisition.analyze_run import NEAR_PT_M, AnalyzeInputError, analyze_file, near_pt
    from insitem.analysis.axes import AnalysisError

    try:
        with np.errstate(all="ignore"):
            series = analyze_file(run_file).series
    except (AnalyzeInputError, AnalysisError):
        return []
    if len(series) < 2:
        return []
    fig, ax_v = plt.subplots(figsize=(9, 4.5))
    sl = _thin(ec["t_s"])
    ax_v.plot(ec["t_s"][sl] / 3600, ec["voltage_V"][sl], lw=0.7, color="0.4")
    ax_v.set_xlabel("time (h)")
    ax_v.set_ylabel("cell potential (V)")
    ax_c = ax_v.twinx()
    t_s = np.array([p.t_s for p in series])
    ax_c.plot(t_s / 3600, [p.near_pt for p in series], "o-", ms=4, lw=0.8, color="tab:green", label="analysed")
    if truth is not None and "li_fraction" in truth and "position_m" in truth and truth["t_s"].size:
        # the truth's positions are distances from the Pt interface already (y = 0 there)
        near = np.array([near_pt(truth["position_m"], c) for c in truth["li_fraction"]])
        ax_c.plot(truth["t_s"] / 3600, near, "--", lw=1.0, color="tab:green", alpha=0.6, label="simulator truth")
        ax_c.legend(loc="upper left", fontsize=8)
    ax_c.set_ylabel(f"Li near Pt (0-{NEAR_PT_M[1] * 1e9:.0f} nm), c/c0", color="tab:green")
    ax_v.set_title(f"{title}: Li near Pt at each Li-K exposure, over the potential")
    return [save_figure(fig, path)]


GAP_FACTOR = 10.0  # a pause longer than this many median reading intervals is drawn as a gap


def with_gaps(ec: dict[str, np.ndarray], breaks_s: list[float] | None = None) -> dict[str, np.ndarray]:
    """The electrochemical record with a NaN row wherever the record pauses - at each time in
    `breaks_s` (a resumed run) and wherever two readings are more than `GAP_FACTOR` median
    intervals apart (the output was off, or nothing ran) - so plotted lines break there."""
    t = ec["t_s"]
    if t.size < 2:
        return ec
    dt = np.diff(t)
    positive = dt[dt > 0]
    cut = dt > GAP_FACTOR * float(np.median(positive)) if positive.size else np.zeros(dt.size, bool)
    for tb in breaks_s or []:
        if np.isfinite(tb):
            k = int(np.searchsorted(t, tb, side="left"))
            if 0 < k < t.size:
                cut[k - 1] = True
    at = np.flatnonzero(cut) + 1
    if not at.size:
        return ec
    out: dict[str, np.ndarray] = {}
    for name, col in ec.items():
        if col.dtype.kind == "f":
            out[name] = np.insert(col, at, np.nan)
        elif name == "t_s":
            out[name] = np.insert(col.astype(float), at, np.nan)
        else:
            out[name] = np.insert(col, at, col[at - 1])  # the gap row keeps its neighbour's cycle
    return out


def _thin(t_s: np.ndarray) -> np.ndarray:
    """Indices of at most ~MAX_EC_POINTS_PLOTTED readings, keeping every gap row (NaN time)."""
    n = t_s.size
    step = max(1, n // MAX_EC_POINTS_PLOTTED)
    if step == 1:
        return np.arange(n)
    return np.union1d(np.arange(0, n, step), np.flatnonzero(np.isnan(t_s)))


def _cv_figure(ec: dict[str, np.ndarray], title: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 5))
    sl = _thin(ec["t_s"])
    v, i, c = ec["voltage_V"][sl], ec["current_A"][sl], ec["cycle"][sl]
    cycles = np.unique(c[c > 0])
    cmap = plt.get_cmap("viridis")
    scale, unit = current_scale(float(np.nanmax(np.abs(i), initial=0.0)))
    for k, cyc in enumerate(cycles):
        sel = c == cyc
        ax.plot(v[sel], i[sel] / scale, color=cmap(k / max(1, len(cycles) - 1)), lw=0.8)
    if len(cycles):
        _cycle_colorbar(fig, ax, cmap, cycles)
    else:
        ax.plot(v, i / scale, lw=0.8)
    ax.set_xlabel("cell voltage (V)")
    ax.set_ylabel(f"current ({unit})")
    ax.set_title(f"{title}: cyclic voltammograms")
    return save_figure(fig, path)


def _trace_figure(ec: dict[str, np.ndarray], recs: dict[str, np.ndarray], title: str, path: Path) -> Path:
    fig, (ax_v, ax_i) = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True)
    sl = _thin(ec["t_s"])
    t_h = ec["t_s"][sl] / 3600
    ax_v.plot(t_h, ec["voltage_V"][sl], lw=0.7)
    scale, unit = current_scale(float(np.nanmax(np.abs(ec["current_A"][sl]), initial=0.0)))
    ax_i.plot(t_h, ec["current_A"][sl] / scale, lw=0.7, color="tab:red")
    if recs and recs["t_start_s"].size:
        windows = [w.decode() if isinstance(w, bytes) else str(w) for w in recs["window"]]
        for k, w in enumerate(sorted(set(windows))):
            sel = np.array([x == w for x in windows])
            t0 = recs["t_start_s"][sel] / 3600
            ax_v.scatter(t0, recs["potential_V"][sel], marker="v", s=30, zorder=3, label=f"exposure {w}", color=f"C{k + 1}")
            for a, b in zip(t0, t0 + recs["exposure_s"][sel] / 3600):
                ax_v.axvspan(a, b, color=f"C{k + 1}", alpha=0.25, lw=0)
        ax_v.legend(loc="best", fontsize=8)
    ax_v.set_ylabel("voltage (V)")
    ax_i.set_ylabel(f"current ({unit})")
    ax_i.set_xlabel("time (h)")
    ax_v.set_title(f"{title}: potential, current and exposures")
    return save_figure(fig, path)


def is_hold(ec: dict[str, np.ndarray]) -> bool:
    """True when the applied potential never swept: every reading at (within 1 mV of) one or a few
    levels held for long, i.e. no CV cycles were recorded."""
    v = ec["voltage_V"]
    cyc = ec["cycle"]
    if v.size < 2:
        return True
    return not np.any(cyc > 0) and len(np.unique(np.round(v, 3))) <= 5


def _cycle_colorbar(fig: Any, ax: Any, cmap: Any, cycles: np.ndarray) -> None:
    """Colour bar of whole cycles: one colour band and one tick per cycle."""
    from matplotlib.colors import BoundaryNorm, ListedColormap

    n = len(cycles)
    colours = ListedColormap([cmap(k / max(1, n - 1)) for k in range(n)])
    bounds = np.arange(n + 1) - 0.5
    sm = plt.cm.ScalarMappable(cmap=colours, norm=BoundaryNorm(bounds, n))
    cb = fig.colorbar(sm, ax=ax, label="cycle", ticks=np.arange(n))
    step = max(1, n // 10)
    cb.set_ticks(np.arange(0, n, step))
    cb.set_ticklabels([str(int(cycles[k])) for k in range(0, n, step)])


def _hold_figure(ec: dict[str, np.ndarray], recs: dict[str, np.ndarray], title: str, path: Path) -> Path:
    """A potentiostatic hold: current against time (a CV of a hold is a vertical line), the potential
    above it, every exposure shaded (the beam is on only then, unless the protocol keeps it on)."""
    fig, (ax_v, ax_i) = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True, gridspec_kw={"height_ratios": [1, 3]})
    sl = _thin(ec["t_s"])
    t = ec["t_s"][sl]
    i = ec["current_A"][sl]
    scale, unit = current_scale(float(np.nanmax(np.abs(i), initial=0.0)))
    ax_v.plot(t, ec["voltage_V"][sl], lw=0.8)
    ax_v.set_ylabel("potential (V)")
    ax_i.plot(t, i / scale, lw=0.6, color="tab:red")
    if recs and recs["t_start_s"].size:
        for k, (a, d) in enumerate(zip(recs["t_start_s"], recs["exposure_s"])):
            for axx in (ax_v, ax_i):
                axx.axvspan(a, a + d, color="tab:orange", alpha=0.3, lw=0, label="exposure (beam on)" if k == 0 and axx is ax_i else None)
        ax_i.legend(loc="best", fontsize=8)
    ax_i.set_ylabel(f"current ({unit})")
    ax_i.set_xlabel("time (s)")
    ax_v.set_title(f"{title}: potentiostatic hold, current against time")
    return save_figure(fig, path)


def _image_figure(img: np.ndarray, energy_eV: np.ndarray, position: np.ndarray, title: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8, 5))
    data = np.log10(np.clip(img, 1.0, None))
    extent = (float(energy_eV[0]), float(energy_eV[-1]), float(position[-1]), float(position[0]))
    im = ax.imshow(data, aspect="auto", extent=extent, cmap="inferno")
    fig.colorbar(im, ax=ax, label="log10 counts")
    ax.set_xlabel("energy loss (eV)")
    ax.set_ylabel("position along the slit (nm)")
    ax.set_title(title)
    return save_figure(fig, path)
