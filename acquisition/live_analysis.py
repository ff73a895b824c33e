"""Live Li-K profile for the runner's progress display (design.md §3: analysis serves live runs).

`LiveLiProfile(window_axes)` is the `live_profile(window_name, image)` callable that
`LiveProgress` calls after each finished spectrum image: for a window that holds the Li-K edge
it returns c/c0 per row (Pt at row 0), for any other window None. It needs no ground truth and
no position calibration, so the simulated and the hardware rig use the same one.

Method: `insitem.analysis.edge_intensity` (power-law background from the pre-edge window, Li-K
counts in the signal window, defaults of `LiParams`, physics.md §1.6/§1.8) on the whole image in
one vectorised call, normalised by the mean of the farthest quarter of the rows (the parent
electrolyte, `analysis.profiles.parent_mask`'s default rule). A window that holds the zero-loss
peak is not a Li-K window: its latest image is kept, and the next Li-K image is spliced onto it and
deconvolved (`analysis.deconvolution`, ~0.15 s) before the fit, as `insitem analyze` does.
Simplifications (named): no
interface location (rows are not shifted to distance from Pt), no drift correction, and the same
pre-edge background limits as `analysis.lithium` (see its docstring and the report in
docs/performance/live-analysis.md). A few ms per 330 x 2048 image.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from insitem.analysis import AnalysisError, EnergyAxis, LiParams, edge_intensity
from insitem.analysis.deconvolution import single_scattering


def li_window_covers(energy: EnergyAxis, params: LiParams | None = None) -> bool:
    """Whether an energy axis spans the Li-K pre-edge and signal windows of `params`."""
    p = params or LiParams()
    lo = float(energy.boundary_eV(0))
    hi = float(energy.boundary_eV(energy.size))
    return lo <= p.pre_edge_eV[0] and hi >= p.signal_eV[1]


class LiveLiProfile:
    """Callable `(window_name, image) -> c/c0 per row or None` for `LiveProgress.live_profile`.

    window_ranges_eV: {window name: (first energy, last energy)} of the windows as the protocol
    declares them (eV); the channel count is taken from each image, so binning along energy needs
    no extra calibration.
    """

    def __init__(self, window_ranges_eV: Mapping[str, tuple[float, float]], params: LiParams | None = None) -> None:
        self.params = params or LiParams()
        self.window_ranges_eV = dict(window_ranges_eV)
        self._lowloss: tuple[np.ndarray, EnergyAxis] | None = None

    @classmethod
    def from_protocol(cls, protocol: object) -> "LiveLiProfile":
        """From a `insitem.protocols.schema.Protocol` (its spectrometer windows)."""
        windows = protocol.spectrometer.windows  # type: ignore[attr-defined]
        return cls({w.name: w.energy_range_eV for w in windows})

    def energy_axis(self, window: str, n_channels: int) -> EnergyAxis | None:
        rng = self.window_ranges_eV.get(window)
        if rng is None:
            return None
        scale = (rng[1] - rng[0]) / n_channels
        return EnergyAxis(offset_eV=rng[0] + 0.5 * scale, scale_eV=scale, size=n_channels)

    def __call__(self, window: str, image: np.ndarray) -> np.ndarray | None:
        img = np.asarray(image)
        if img.ndim != 2 or img.shape[0] < 8:
            return None
        energy = self.energy_axis(window, img.shape[1])
        if energy is None:
            return None
        if energy.boundary_eV(0) < 0.0 < energy.boundary_eV(energy.size):  # holds the zero-loss peak
            self._lowloss = (np.array(img, dtype=np.float32), energy)  # counts: float32 is exact enough
            return None
        if not li_window_covers(energy, self.params):
            return None
        p = self.params
        try:
            with np.errstate(invalid="ignore", divide="ignore", over="ignore"):  # rows without signal (vacuum) give NaN
                ll = self._lowloss
                if ll is not None and ll[0].shape[0] == img.shape[0]:
                    ss = single_scattering(ll[0], ll[1], img.astype(np.float64), energy, p.deconvolution)
                    counts = edge_intensity(ss.ssd, ss.energy, p.pre_edge_eV, p.signal_eV, p.method).intensity / ss.i0
                else:
                    counts = edge_intensity(img.astype(np.float64), energy, p.pre_edge_eV, p.signal_eV, p.method).intensity
        except AnalysisError:
            return None
        n = counts.size
        far = counts[int(0.75 * n) :]
        far = far[np.isfinite(far)]
        level = float(np.mean(far)) if far.size else float("nan")
        if not np.isfinite(level) or level <= 0:
            return None
        return counts / level
