"""The simulated microscope: `Microscope` with beam, lens and slit parts as views of a MicroscopeState.

Nothing is cached here: every read-back comes from the shared `MicroscopeState` (so a blank made
through the emulator is seen by the camera simulator at once), and `set_blanked` records the
time from the world's clock, which makes the dose record exact (physics.md §5).
Out-of-range settings make the state raise `ValueError`; it is re-raised here as
`InstrumentError` with the SCPI code -222 ("Data out of range") so simulated and real
backends fail alike.
"""

from __future__ import annotations

from typing import Callable, TypeVar

from insitem.drivers.errors import InstrumentError
from insitem.drivers.interfaces import Beam, InstrumentIdentity, Lens, Microscope, Slit
from insitem.simulators.optics import MicroscopeState, OpticsParameters

T = TypeVar("T")


def _checked(resource: str, fn: Callable[[], T]) -> T:
    try:
        return fn()
    except ValueError as exc:
        raise InstrumentError(str(exc), resource, code=-222) from exc


class SimBeam(Beam):
    def __init__(self, state: MicroscopeState, resource: str) -> None:
        self._s, self._r = state, resource

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
    def __init__(self, state: MicroscopeState, resource: str) -> None:
        self._s, self._r = state, resource

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


class SimMicroscope(Microscope):
    """A `Microscope` whose beam, lens and slit are views of one `MicroscopeState`."""

    def __init__(self, state: MicroscopeState | None = None, resource: str = "sim:tem") -> None:
        self.state = state or MicroscopeState(OpticsParameters())
        self.resource = resource
        self._beam = SimBeam(self.state, resource)
        self._lens = SimLens(self.state, resource)
        self._slit = SimSlit(self.state, resource)

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
