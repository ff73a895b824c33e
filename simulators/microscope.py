"""The simulated microscope: `Microscope` with beam, lens and slit parts as views of a MicroscopeState.

Nothing is cached here: every read-back comes from the shared `MicroscopeState` (so a blank made
through the emulator is seen by the camera simulator at once), and `set_blanked` records the
time from the world's clock, which makes the dose record exact (physics.md §5).
Out-of-range settings make the state raise `ValueError`; it is re-raised here as
`InstrumentError` with the SCPI code -222 ("Data out of range") so simulated and real
backends fail alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, TypeVar

from insitem.drivers.errors import InstrumentError
from insitem.drivers.interfaces import Beam, InstrumentIdentity, Lens, Microscope, Slit, Stage, StagePosition
from insitem.simulators.optics import MicroscopeState, OpticsParameters

T = TypeVar("T")


#: Stage travel [est: temscript's NullMicroscope limits, niermann/temscript null_microscope.py:
#: x, y +-1 mm, z +-0.3 mm, tilt +-pi/6 - a single-tilt in-situ holder's range, not one model's]
STAGE_LIMITS: dict[str, tuple[float, float]] = {
    "x_m": (-1e-3, 1e-3), "y_m": (-1e-3, 1e-3), "z_m": (-0.3e-3, 0.3e-3), "alpha_rad": (-math.pi / 6, math.pi / 6),
}
#: Image and beam shift range at the specimen [est: +-2 um, a few fields of view of the 1.9 um
#: slit length (physics.md §0) - larger corrections go to the stage]
SHIFT_LIMIT_M = 2e-6


@dataclass
class PositionState:
    """Stage position and image/beam shifts of the simulated microscope (SI units), range-checked.

    Kept beside the optical state: the world's specimen drift, where modelled, reads them."""

    stage: dict[str, float] = field(default_factory=lambda: {"x_m": 0.0, "y_m": 0.0, "z_m": 0.0, "alpha_rad": 0.0})
    image_shift_m: tuple[float, float] = (0.0, 0.0)
    beam_shift_m: tuple[float, float] = (0.0, 0.0)

    def move_stage(self, **axes: float | None) -> None:
        """Absolute move of the axes given; ValueError (nothing moves) when one is out of range."""
        new = dict(self.stage)
        for axis, value in axes.items():
            if value is None:
                continue
            lo, hi = STAGE_LIMITS[axis]
            if not (math.isfinite(value) and lo <= value <= hi):
                raise ValueError(f"stage {axis} {value:g} outside the stage limits [{lo:g}, {hi:g}]")
            new[axis] = float(value)
        self.stage = new

    @staticmethod
    def _shift(what: str, x_m: float, y_m: float) -> tuple[float, float]:
        for v in (x_m, y_m):
            if not (math.isfinite(v) and abs(v) <= SHIFT_LIMIT_M):
                raise ValueError(f"{what} {v:g} m outside [-{SHIFT_LIMIT_M:g}, {SHIFT_LIMIT_M:g}] m")
        return (float(x_m), float(y_m))

    def set_image_shift(self, x_m: float, y_m: float) -> None:
        self.image_shift_m = self._shift("image shift", x_m, y_m)

    def set_beam_shift(self, x_m: float, y_m: float) -> None:
        self.beam_shift_m = self._shift("beam shift", x_m, y_m)


def _checked(resource: str, fn: Callable[[], T]) -> T:
    try:
        return fn()
    except ValueError as exc:
        raise InstrumentError(str(exc), resource, code=-222) from exc


class SimBeam(Beam):
    def __init__(self, state: MicroscopeState, resource: str, position: PositionState | None = None) -> None:
        self._s, self._r = state, resource
        self._p = position or PositionState()

    @property
    def shift_m(self) -> tuple[float, float]:
        return self._p.beam_shift_m

    def set_shift(self, x_m: float, y_m: float) -> None:
        _checked(self._r, lambda: self._p.set_beam_shift(x_m, y_m))

    @property
    def high_tension_V(self) -> float:
        return self._s.high_tension_V

    @property
    def blanked(self) -> bool:
        return self._s.blanked

    def set_blanked(self, blanked: bool) -> None:
        self._s.set_blanked(blanked)

    @property
    def current_A(self) -> float:
        return self._s.beam_current_A

    def set_current(self, current_A: float) -> None:
        """Simulation-only: change the beam current (A)."""
        _checked(self._r, lambda: self._s.set_beam_current(current_A))

    @property
    def illuminated_area_m2(self) -> float:
        return self._s.illuminated_area_m2

    @property
    def illuminated_diameter_m(self) -> float:
        return self._s.illuminated_diameter_m

    def set_illuminated_diameter(self, diameter_m: float) -> None:
        """Simulation-only: change the illuminated disc diameter (m)."""
        _checked(self._r, lambda: self._s.set_illuminated_diameter(diameter_m))


class SimLens(Lens):
    def __init__(self, state: MicroscopeState, resource: str, position: PositionState | None = None) -> None:
        self._s, self._r = state, resource
        self._p = position or PositionState()

    @property
    def image_shift_m(self) -> tuple[float, float]:
        return self._p.image_shift_m

    def set_image_shift(self, x_m: float, y_m: float) -> None:
        _checked(self._r, lambda: self._p.set_image_shift(x_m, y_m))

    @property
    def mode(self) -> str:
        return self._s.mode

    def set_mode(self, mode: str) -> None:
        _checked(self._r, lambda: self._s.set_mode(mode))

    @property
    def magnification(self) -> float:
        return self._s.magnification

    def set_magnification(self, magnification: float) -> None:
        _checked(self._r, lambda: self._s.set_magnification(magnification))

    @property
    def defocus_m(self) -> float:
        return self._s.defocus_m

    def set_defocus(self, defocus_m: float) -> None:
        _checked(self._r, lambda: self._s.set_defocus(defocus_m))


class SimSlit(Slit):
    def __init__(self, state: MicroscopeState, resource: str) -> None:
        self._s, self._r = state, resource

    @property
    def inserted(self) -> bool:
        return self._s.slit_inserted

    def set_inserted(self, inserted: bool) -> None:
        self._s.set_slit_inserted(inserted)

    @property
    def width_m(self) -> float:
        return self._s.slit_width_m

    def set_width(self, width_m: float) -> None:
        _checked(self._r, lambda: self._s.set_slit_width(width_m))

    @property
    def height_m(self) -> float:
        return self._s.slit_height_m

    def set_height(self, height_m: float) -> None:
        _checked(self._r, lambda: self._s.set_slit_height(height_m))

    @property
    def centre_m(self) -> tuple[float, float]:
        return self._s.slit_centre_m

    def set_centre(self, x_m: float, y_m: float) -> None:
        _checked(self._r, lambda: self._s.set_slit_centre(x_m, y_m))

    @property
    def angle_rad(self) -> float:
        return self._s.slit_angle_rad

    def set_angle(self, angle_rad: float) -> None:
        _checked(self._r, lambda: self._s.set_slit_angle(angle_rad))


class SimStage(Stage):
    def __init__(self, position: PositionState, resource: str) -> None:
        self._p, self._r = position, resource

    @property
    def position(self) -> StagePosition:
        st = self._p.stage
        return StagePosition(st["x_m"], st["y_m"], st["z_m"], st["alpha_rad"])

    def move_to(
        self, x_m: float | None = None, y_m: float | None = None, z_m: float | None = None, alpha_rad: float | None = None
    ) -> None:
        _checked(self._r, lambda: self._p.move_stage(x_m=x_m, y_m=y_m, z_m=z_m, alpha_rad=alpha_rad))


class SimMicroscope(Microscope):
    """A `Microscope` whose beam, lens and slit are views of one `MicroscopeState`; the stage and
    the image/beam shifts are a `PositionState` beside it (moves are instantaneous)."""

    def __init__(self, state: MicroscopeState | None = None, resource: str = "sim:tem",
                 position: PositionState | None = None) -> None:
        self.state = state or MicroscopeState(OpticsParameters())
        self.position = position if position is not None else PositionState()
        self.resource = resource
        self._beam = SimBeam(self.state, resource, self.position)
        self._lens = SimLens(self.state, resource, self.position)
        self._slit = SimSlit(self.state, resource)
        self._stage = SimStage(self.position, resource)

    @property
    def stage(self) -> SimStage:
        return self._stage

    @property
    def beam(self) -> SimBeam:
        return self._beam

    @property
    def lens(self) -> SimLens:
        return self._lens

    @property
    def slit(self) -> SimSlit:
        return self._slit

    def identify(self) -> InstrumentIdentity:
        return InstrumentIdentity("insitem", "SimMicroscope", "0", "sim", self.resource)
