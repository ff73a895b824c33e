"""The specimen across the slit (x): what the strip of width w integrates at a given x.

The layer stack of simulators/sample.py is described along y (the slit's long axis). Across the
slit a real cross-section is not infinite and not uniform; three departures, each a parameter:

* **Tilted interface.** The layers make an angle ``alpha`` with the slit's normal: the layer
  boundaries run along ``y = y_b + x tan(alpha)``, so everything the sample holds is a function of
  ``u = y - x tan(alpha)``. A strip centred at specimen ``x_c`` sees the layers shifted along the slit
  by ``x_c tan(alpha)`` and smeared over a box of width ``w |tan(alpha)|`` (every x across the strip
  sees its own u). A drift ``dx`` across the slit therefore moves the interface along the slit by
  ``-dx tan(alpha)``.
* **Wedge.** The thickness changes across the slit, ``t(x) = t0 + (dt/dx) x``; the strip sees
  ``t(x_c)`` (the mean over its width: exact for a linear wedge, to first order for the spectrum,
  whose plural scattering is not linear in t; the neglected term is of order
  ``((dt/dx) w / lambda)^2 / 12``, 4e-6 for dt/dx = 0.01, w = 200 nm, lambda = 195 nm).
  The thickness is taken on a grid of relative steps ``thickness_step`` (each step is a sample of
  its own for the EELS synthesis' caches, simulators/eels.py, built once per step).
* **An edge.** The specimen ends at ``x = edge_x_m`` (the free side of the lamella's thinned
  window, or a hole): beyond it is vacuum, whose electrons all pass without loss. The strip's
  fraction beyond the edge adds a zero-loss peak and takes away specimen signal.

Coordinates: specimen x measured from the point that sat under the strip's centre line when the
run started (no drift, no image shift); a drift of +dx moves the specimen by +dx, so the strip then
sees specimen x = -dx. Defaults: no tilt, no wedge, no edge (an infinite uniform slab, as before).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field


class AcrossSlit(BaseModel):
    """The specimen's structure across the slit (x). SI units; defaults: uniform and infinite."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    interface_tilt_rad: float = Field(
        default=0.0, ge=-0.5, le=0.5,
        description="angle between the layer boundaries and the slit's normal, rad (0: the slit lies across the layers)",
    )
    thickness_gradient: float = Field(
        default=0.0, ge=-1.0, le=1.0, description="dt/dx across the slit (m of thickness per m of x): a wedge",
    )
    edge_x_m: float | None = Field(
        default=None, description="specimen x of its edge: vacuum beyond it (x > edge if edge > 0, else x < edge), m; None: no edge",
    )
    thickness_step: float = Field(
        default=0.002, gt=0, le=0.1,
        description="relative step of the thickness grid the wedge is taken on (0.2 %: t/lambda within 0.1 %)",
    )


@dataclass(frozen=True)
class StripView:
    """What the strip integrates when its centre line sits at specimen ``x_centre_m``."""

    x_centre_m: float
    shift_m: float  # the layers appear moved along the slit by -shift_m (x_c tan alpha)
    smear_m: float  # box width along the slit over which the tilted layers are smeared (w |tan alpha|)
    thickness_level: int  # thickness = t0 (1 + thickness_level * thickness_step)
    thickness_factor: float
    vacuum_fraction: float  # of the strip's width beyond the specimen's edge

    @property
    def is_plain(self) -> bool:
        """The strip sees the infinite uniform slab: nothing to add to the synthesis."""
        return self.shift_m == 0.0 and self.smear_m == 0.0 and self.thickness_level == 0 and self.vacuum_fraction == 0.0


def strip_view(shape: AcrossSlit, x_centre_m: float, width_m: float, t0_m: float) -> StripView:
    """The strip of width ``width_m`` centred on specimen ``x_centre_m`` over a specimen of
    nominal thickness ``t0_m`` (see the module docstring)."""
    tan_a = math.tan(shape.interface_tilt_rad)
    shift = x_centre_m * tan_a
    smear = width_m * abs(tan_a)
    rel = shape.thickness_gradient * x_centre_m / t0_m
    level = int(round(rel / shape.thickness_step))
    factor = 1.0 + level * shape.thickness_step
    if factor <= 0.0:
        raise ValueError(f"the wedge (thickness_gradient {shape.thickness_gradient}) leaves no specimen at x = {x_centre_m} m")
    vacuum = 0.0
    if shape.edge_x_m is not None:
        lo, hi = x_centre_m - width_m / 2, x_centre_m + width_m / 2
        beyond = hi - shape.edge_x_m if shape.edge_x_m > 0 else shape.edge_x_m - lo
        vacuum = min(max(beyond / width_m, 0.0), 1.0)
    return StripView(x_centre_m, shift, smear, level, factor, vacuum)


__all__ = ["AcrossSlit", "StripView", "strip_view"]
