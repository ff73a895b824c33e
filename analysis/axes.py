"""Axis calibrations of a spectrum image and the analysis error.

A spectrum image is an array of shape ``(..., n_position, n_energy)`` (rows = position along the
slit, columns = energy loss). The analysis never reads files; it takes the array plus these two
calibrations, which map one to one onto HyperSpy's ``DataAxis`` (``offset``, ``scale``, ``size``)
and onto the run file's ``axis-N`` groups (design.md §7).

Channel convention: channel ``i`` is centred on ``offset_eV + i * scale_eV`` and covers half a
channel either side, so its boundaries are ``offset_eV + (i -/+ 0.5) * scale_eV``. Energy windows
snap to the nearest channel boundaries; every integral below is a sum of whole channels.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field



class AnalysisError(ValueError):
    """Input the analysis cannot work with: a window outside the axis, too few rows, no parent region.

    A plain ValueError: the analysis is pure and knows nothing of the instruments' error family;
    the commands that run it (`insitem analyze`, `show`) turn it into their one-line message."""


class EnergyAxis(BaseModel):
    """Energy-loss calibration of the last array axis (eV)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    offset_eV: float = Field(description="energy loss at the centre of channel 0 (eV)")
    scale_eV: float = Field(gt=0, description="dispersion (eV per channel), 0.1 eV nominal [Y14]")
    size: int = Field(gt=0, description="number of channels")

    @property
    def values_eV(self) -> np.ndarray:
        """Channel centres (eV)."""
        return self.offset_eV + self.scale_eV * np.arange(self.size)

    def edge_index(self, energy_eV: float) -> int:
        """Index of the channel boundary nearest `energy_eV` (boundary j sits at offset + (j - 0.5) scale)."""
        # + 1e-6 makes exact ties (a boundary halfway between two) round up, independent of float noise
        return int(np.floor((energy_eV - self.offset_eV) / self.scale_eV + 1.0 + 1e-6))

    def boundary_eV(self, j: int | np.ndarray) -> float | np.ndarray:
        """Energy (eV) of channel boundary `j` (the lower boundary of channel j)."""
        return self.offset_eV + (np.asarray(j) - 0.5) * self.scale_eV

    def window(self, lo_eV: float, hi_eV: float, min_channels: int = 1) -> slice:
        """Channels between the boundaries nearest `lo_eV` and `hi_eV`.

        Raises AnalysisError when the window leaves the axis or holds fewer than `min_channels`.
        """
        if hi_eV <= lo_eV:
            raise AnalysisError(f"energy window ({lo_eV}, {hi_eV}) eV: upper end must exceed lower end")
        j0, j1 = self.edge_index(lo_eV), self.edge_index(hi_eV)
        if j0 < 0 or j1 > self.size:
            lo, hi = self.boundary_eV(0), self.boundary_eV(self.size)
            raise AnalysisError(
                f"energy window ({lo_eV}, {hi_eV}) eV lies outside the axis ({lo:.2f}-{hi:.2f} eV)"
            )
        if j1 - j0 < min_channels:
            raise AnalysisError(f"energy window ({lo_eV}, {hi_eV}) eV holds {j1 - j0} channels, need {min_channels}")
        return slice(j0, j1)

    def window_edges_eV(self, sl: slice) -> tuple[float, float]:
        """Outer boundaries (eV) of a channel slice from `window`."""
        return float(self.boundary_eV(sl.start)), float(self.boundary_eV(sl.stop))

    def sub(self, sl: slice) -> "EnergyAxis":
        """The calibration of ``data[..., sl]``."""
        return EnergyAxis(
            offset_eV=self.offset_eV + sl.start * self.scale_eV, scale_eV=self.scale_eV, size=sl.stop - sl.start
        )

    def shifted(self, shift_eV: float) -> "EnergyAxis":
        """Corrected calibration for a spectrum whose features sit `shift_eV` above the reference.

        A measured feature at nominal E is really at E - shift, so the offset moves down by the shift.
        """
        return EnergyAxis(offset_eV=self.offset_eV - shift_eV, scale_eV=self.scale_eV, size=self.size)


class PositionAxis(BaseModel):
    """Position calibration of the row axis along the slit (m); 5.70 nm per row in [Y14] (physics.md §0)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    offset_m: float = Field(default=0.0, description="position of row 0 (m)")
    scale_m: float = Field(gt=0, description="row pitch (m)")
    size: int = Field(gt=0, description="number of rows")

    @property
    def values_m(self) -> np.ndarray:
        """Row positions (m)."""
        return self.offset_m + self.scale_m * np.arange(self.size)


def check_image(data: np.ndarray, energy: EnergyAxis) -> np.ndarray:
    """Return `data` as an array whose last axis matches `energy` (raises AnalysisError otherwise)."""
    arr = np.asarray(data)
    if arr.ndim < 1 or arr.shape[-1] != energy.size:
        raise AnalysisError(f"data shape {arr.shape}: last axis must have {energy.size} energy channels")
    return arr
