"""Particle width, plasmon energy and Li-K of alloying particles from low-loss spectrum images.

For the Si-nanoparticle lithiation ([P3]): each exposure is a low-loss image (rows along the slit x
channels, no zero-loss peak needed) holding the plasmon region and Li-K. Per row:

* matter: the counts over ``plasmon_eV`` stand above the vacuum level (the dimmest tenth of the rows)
  by ``matter_sigma`` of its noise widths (robust: median and MAD), and for host rows also by
  ``host_fraction`` of the bright rows' level (90th percentile, host and electrolyte rows each against
  their own), which keeps the detector's long point-spread tails next to a bright electrolyte out of
  the particle and noise out of the vacuum;
* plasmon energy: the maximum of the row's spectrum over ``plasmon_eV`` (lightly smoothed, refined by a
  parabola through the three channels around it);
* host rows: matter rows whose plasmon lies below ``electrolyte_min_eV`` (c-Si 16.7 eV, a-LixSi ~12 eV;
  the Li2O electrolyte sits at ~22.6 eV, physics-seed-systems.md A.4);
* the particle (cluster) width along the slit: the number of host rows in the longest contiguous run of
  host rows (gaps of up to ``max_gap_rows`` bridged), times the row pitch;
* Li-K: the power-law-subtracted counts over ``li_signal_eV`` of the summed host rows per host row
  (exposures of one series share their dose, so this rises with the Li the rows hold).

Pure: arrays and axes in, numbers out; nothing here knows how the spectra were made.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict

from insitem.analysis.axes import AnalysisError, EnergyAxis, PositionAxis, check_image
from insitem.analysis.background import edge_intensity


class ParticleParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    plasmon_eV: tuple[float, float] = (8.0, 30.0)
    electrolyte_min_eV: float = 19.5
    matter_sigma: float = 8.0
    host_fraction: float = 0.1
    max_gap_rows: int = 2
    smooth_channels: int = 9
    li_pre_edge_eV: tuple[float, float] = (46.0, 53.0)
    li_signal_eV: tuple[float, float] = (56.0, 70.0)


@dataclass(frozen=True)
class ParticleFrame:
    """One exposure: masks per row, the plasmon energy per row, and the cluster's summary numbers."""

    matter: np.ndarray
    host: np.ndarray
    plasmon_eV: np.ndarray
    width_m: float
    host_start_m: float
    host_end_m: float
    host_plasmon_eV: float
    li_k_per_row: float


def _runs(mask: np.ndarray, max_gap: int) -> list[tuple[int, int]]:
    """(start, stop) of the runs of True, bridging gaps of up to `max_gap` False."""
    idx = np.nonzero(mask)[0]
    if idx.size == 0:
        return []
    runs = []
    start = prev = int(idx[0])
    for i in idx[1:]:
        if i - prev > max_gap + 1:
            runs.append((start, prev + 1))
            start = int(i)
        prev = int(i)
    runs.append((start, prev + 1))
    return runs


def row_plasmon_eV(data: np.ndarray, energy: EnergyAxis, window_eV: tuple[float, float], smooth: int = 9) -> np.ndarray:
    """Energy of the maximum of each row over `window_eV` (boxcar-smoothed, parabola-refined), eV."""
    arr = check_image(data, energy).astype(float)
    sl = energy.window(*window_eV, min_channels=5)
    seg = arr[:, sl]
    if smooth > 1:
        k = np.ones(smooth) / smooth
        seg = np.apply_along_axis(lambda r: np.convolve(r, k, mode="same"), 1, seg)
    j = np.clip(np.argmax(seg, axis=1), 1, seg.shape[1] - 2)
    rows = np.arange(seg.shape[0])
    a, b, c = seg[rows, j - 1], seg[rows, j], seg[rows, j + 1]
    den = a - 2 * b + c
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.where(den < 0, 0.5 * (a - c) / den, 0.0)
    return energy.values_eV[sl][j] + np.clip(d, -1, 1) * energy.scale_eV


def analyse_particles(data: np.ndarray, energy: EnergyAxis, position: PositionAxis,
                      params: ParticleParams | None = None) -> ParticleFrame:
    """Masks, plasmon energies, cluster width and Li-K ratio of one low-loss image (see module docstring)."""
    p = params or ParticleParams()
    arr = check_image(data, energy).astype(float)
    if arr.ndim != 2 or arr.shape[0] != position.size:
        raise AnalysisError(f"image shape {arr.shape}: need ({position.size} rows, {energy.size} channels)")
    counts = arr[:, energy.window(*p.plasmon_eV)].sum(axis=1)
    order = np.sort(counts)
    n_vac = max(3, arr.shape[0] // 10)
    vac = order[:n_vac]
    vac_level = float(np.median(vac))
    vac_sigma = float(1.4826 * np.median(np.abs(vac - vac_level))) + 1e-9
    candidate = counts > vac_level + p.matter_sigma * vac_sigma
    ep = row_plasmon_eV(arr, energy, p.plasmon_eV, p.smooth_channels)
    host = candidate & (ep < p.electrolyte_min_eV)
    if host.any():
        ref = float(np.percentile(counts[host], 90))
        host &= counts > vac_level + p.host_fraction * (ref - vac_level)
    other = candidate & ~host
    if other.any():  # electrolyte: the same rule against its own level
        ref = float(np.percentile(counts[other], 90))
        other &= counts > vac_level + p.host_fraction * (ref - vac_level)
    matter = host | other
    runs = _runs(host, p.max_gap_rows)
    y = position.values_m
    if not runs:
        return ParticleFrame(matter, host, ep, 0.0, float("nan"), float("nan"), float("nan"), float("nan"))
    a, b = max(runs, key=lambda r: int(host[r[0]:r[1]].sum()))
    in_run = np.zeros_like(host)
    in_run[a:b] = host[a:b]
    width = float(in_run.sum()) * position.scale_m
    w = counts[in_run]
    host_ep = float(np.sum(ep[in_run] * w) / np.sum(w))
    summed = arr[in_run].sum(axis=0)
    li = edge_intensity(summed, energy, p.li_pre_edge_eV, p.li_signal_eV)
    per_row = float(li.intensity) / float(in_run.sum())
    return ParticleFrame(matter, in_run, ep, width, float(y[a]), float(y[b - 1]), host_ep, per_row)


@dataclass(frozen=True)
class ParticleSeries:
    """Per-exposure numbers of a hold: time (s), width (m), host plasmon (eV), Li-K counts per host row."""

    t_s: np.ndarray
    width_m: np.ndarray
    plasmon_eV: np.ndarray
    li_k_per_row: np.ndarray
    frames: list[ParticleFrame]

    def growth_fraction_by(self, t_s: float) -> float:
        """Share of the width growth (last - first) reached by time `t_s` (linear interpolation)."""
        total = float(self.width_m[-1] - self.width_m[0])
        if total <= 0:
            return float("nan")
        return float((np.interp(t_s, self.t_s, self.width_m) - self.width_m[0]) / total)


def particle_series(images: list[np.ndarray], t_s: np.ndarray, energy: EnergyAxis, position: PositionAxis,
                    params: ParticleParams | None = None) -> ParticleSeries:
    """`analyse_particles` of every exposure of a series."""
    frames = [analyse_particles(img, energy, position, params) for img in images]
    return ParticleSeries(
        t_s=np.asarray(t_s, float),
        width_m=np.array([f.width_m for f in frames]),
        plasmon_eV=np.array([f.host_plasmon_eV for f in frames]),
        li_k_per_row=np.array([f.li_k_per_row for f in frames]),
        frames=frames,
    )
