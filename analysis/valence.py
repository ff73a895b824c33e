"""Delithiation of an olivine electrode from low-loss images: the 5 eV peak and Li-K of its rows.

For the LFP | LAGP | LVP micro-battery ([P2] Fig. 6): FePO4 has an interband peak near 5 eV that
LiFePO4 lacks ([S:MOR09]), and the Li-K edge (~60 eV) of the electrode falls as Li leaves. Per image:

* electrode rows: chosen once from a reference image as the rows whose Fe M2,3 rise (counts over
  ``fe_edge_eV`` relative to ``fe_pre_eV``, per plasmon-region count) is above the midpoint between
  the two populations of rows (the electrolyte has no Fe) - or given by the caller;
* 5 eV peak: counts over ``peak_eV`` above a straight line through the ``peak_baseline_eV`` windows on
  either side, per count over ``plasmon_eV`` (thickness-free);
* Li-K: power-law-subtracted counts over ``li_signal_eV`` per count over ``plasmon_eV``; the Fe M2,3
  edge (52.7 eV) lies under it and stays, so the ratio falls by the Li part only.

Pure: arrays and axes in, numbers out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict

from insitem.analysis.axes import EnergyAxis, check_image
from insitem.analysis.background import edge_intensity


class ValenceParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    plasmon_eV: tuple[float, float] = (15.0, 40.0)
    peak_eV: tuple[float, float] = (4.0, 6.5)
    peak_baseline_eV: tuple[tuple[float, float], tuple[float, float]] = ((2.5, 3.5), (8.0, 9.0))
    fe_pre_eV: tuple[float, float] = (48.0, 52.0)
    fe_edge_eV: tuple[float, float] = (53.0, 54.5)
    li_pre_edge_eV: tuple[float, float] = (44.0, 51.5)  # below Fe M2,3 (52.7 eV)
    li_signal_eV: tuple[float, float] = (56.0, 70.0)


@dataclass(frozen=True)
class ValenceFrame:
    peak5_ratio: float
    li_k_ratio: float
    n_rows: int


def electrode_rows(data: np.ndarray, energy: EnergyAxis, params: ValenceParams | None = None) -> np.ndarray:
    """Rows holding the Fe electrode (boolean mask), from the Fe M2,3 rise (see module docstring)."""
    p = params or ValenceParams()
    arr = check_image(data, energy).astype(float)
    pl = arr[:, energy.window(*p.plasmon_eV)].sum(axis=1)
    pre = arr[:, energy.window(*p.fe_pre_eV)].mean(axis=1)
    edge = arr[:, energy.window(*p.fe_edge_eV)].mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        m = np.where(pl > 0, (edge - pre) / np.maximum(pl, 1e-9), np.nan)
    ok = np.isfinite(m)
    if ok.sum() < 4:
        return np.zeros(arr.shape[0], bool)
    lo, hi = np.percentile(m[ok], [10, 90])
    return ok & (m > 0.5 * (lo + hi))


def analyse_valence(data: np.ndarray, energy: EnergyAxis, rows: np.ndarray,
                    params: ValenceParams | None = None) -> ValenceFrame:
    """5 eV peak and Li-K ratios of the summed `rows` of one low-loss image."""
    p = params or ValenceParams()
    arr = check_image(data, energy).astype(float)
    s = arr[np.asarray(rows, bool)].sum(axis=0)
    pl = float(s[energy.window(*p.plasmon_eV)].sum())
    (a0, a1), (b0, b1) = p.peak_baseline_eV
    ea, eb = 0.5 * (a0 + a1), 0.5 * (b0 + b1)
    ya, yb = float(s[energy.window(a0, a1)].mean()), float(s[energy.window(b0, b1)].mean())
    sl = energy.window(*p.peak_eV)
    E = energy.values_eV[sl]
    base = ya + (yb - ya) * (E - ea) / (eb - ea)
    peak = float(np.sum(s[sl] - base))
    li = edge_intensity(s, energy, p.li_pre_edge_eV, p.li_signal_eV)
    n = int(np.count_nonzero(rows))
    if pl <= 0 or n == 0:
        return ValenceFrame(float("nan"), float("nan"), n)
    return ValenceFrame(peak / pl, float(li.intensity) / pl, n)
