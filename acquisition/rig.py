"""Build the rig a run talks to: simulated devices over one SimWorld, or real drivers.

`RigBundle` carries the rig plus what differs between the two: instrument identities, the
position calibration of the spectrum images, ground truth and live analysis (simulation only),
and checkpointing the simulated world so `--resume` continues it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from insitem.drivers.clock import Clock
from insitem.drivers.errors import ResourceError
from insitem.drivers.interfaces import CameraSettings, InstrumentIdentity, Rig
from insitem.protocols.schema import Protocol

if TYPE_CHECKING:
    from insitem.acquisition.runfile import GroundTruthSpec
    from insitem.acquisition.runner import Runner

ROLE_ALIASES = {"potentiostat": "potentiostat", "smu": "potentiostat", "camera": "camera", "gif": "camera", "tem": "microscope", "microscope": "microscope"}


def parse_resource_overrides(items: list[str]) -> dict[str, str]:
    """`--resource NAME=RESOURCE` items -> {role: resource}. One-line ResourceError on bad input."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        role = ROLE_ALIASES.get(name.strip().lower())
        if not sep or not value.strip() or role is None:
            raise ResourceError(
                f"--resource {item!r}: expected NAME=RESOURCE with NAME one of potentiostat, camera, tem "
                "(e.g. potentiostat=GPIB0::24::INSTR)"
            )
        out[role] = value.strip()
    return out


class RigBundle:
    """A rig and the run-level services that depend on how it was built."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.ground_truth_spec: GroundTruthSpec | None = None
        self.ground_truth: Callable[[], tuple[dict[str, np.ndarray], dict[str, float]]] | None = None
        self.live_profile: Callable[[str, np.ndarray], np.ndarray | None] | None = None

    def identify(self) -> dict[str, InstrumentIdentity]:
        ids = {}
        for role, dev in (("potentiostat", self.rig.potentiostat), ("camera", self.rig.camera), ("microscope", self.rig.microscope)):
            ids[role] = dev.identify()
        return ids

    def position_axis_nm(self, settings: CameraSettings) -> tuple[float, float]:
        """(scale, offset) of the spectrum image's position axis, nm per binned row and nm at row 0."""
        return 1.0, 0.0

    def attach_runner(self, runner: "Runner") -> None:
        pass

    def checkpoint(self, run_file: Path) -> None:
        pass

    def close(self) -> None:
        self.rig.close()


def build_rig(
    protocol: Protocol,
    clock: Clock,
    *,
    hardware: bool,
    overrides: dict[str, str] | None = None,
    resume_from: Path | None = None,
    start_step: int = 0,
) -> RigBundle:
    if hardware:
        return build_hardware_rig(protocol, clock, overrides or {})
    return SimRigBundle.create(protocol, clock, resume_from=resume_from)


def hardware_resources(protocol: Protocol, overrides: dict[str, str]) -> dict[str, str]:
    """{role: resource} of a hardware run: the protocol's resource strings or `--resource`
    overrides. One-line ResourceError when a role has none."""
    inst = protocol.instruments
    resources = {
        "potentiostat": overrides.get("potentiostat", inst.potentiostat.resource),
        "camera": overrides.get("camera", inst.camera.resource),
        "microscope": overrides.get("microscope", inst.microscope.resource),
    }
    for role, res in resources.items():
        if not res:
            raise ResourceError(f"{role}: no resource string (set instruments.{role}.resource or --resource {role}=...)")
    return resources


def build_hardware_rig(protocol: Protocol, clock: Clock, overrides: dict[str, str]) -> RigBundle:
    """Real drivers from the protocol's resource strings (or `--resource` overrides)."""
    inst = protocol.instruments
    resources = hardware_resources(protocol, overrides)
    opened: list[Any] = []
    try:
        pot = open_potentiostat(inst.potentiostat.model, resources["potentiostat"], clock)
        opened.append(pot)
        from insitem.drivers.gif.camera import GifCamera, GifCameraConfig

        sensor = protocol.spectrometer.camera
        cam = GifCamera(
            GifCameraConfig(resource=resources["camera"], sensor_shape=(sensor.sensor_rows, sensor.sensor_channels)),
            clock=clock,
        )
        opened.append(cam)
        from insitem.drivers.tem.client import TemMicroscope

        scope = TemMicroscope(resources["microscope"])
        opened.append(scope)
    except BaseException:
        for dev in opened:
            try:
                dev.safe_state()
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass
            try:
                dev.close()
            except Exception:  # noqa: BLE001
                pass
        raise
    return HardwareRigBundle(Rig(pot, cam, scope, clock), protocol)


def open_potentiostat(model: str, resource: str, clock: Clock, timeout_s: float | None = None) -> Any:
    """The driver of potentiostat `model` on `resource` (connected, identity checked); `timeout_s`:
    the reply timeout (the driver's default when None)."""
    from insitem.drivers.keithley.k2400 import Keithley2400
    from insitem.drivers.keithley.k2450 import Keithley2450

    cls = {"keithley2400": Keithley2400, "keithley2450": Keithley2450}.get(model)
    if cls is None:
        raise ResourceError(f"potentiostat model {model!r}: expected keithley2400 or keithley2450")
    if timeout_s is None:
        return cls(resource, clock=clock)
    return cls(resource, clock=clock, timeout_s=timeout_s)


class HardwareRigBundle(RigBundle):
    def __init__(self, rig: Rig, protocol: Protocol) -> None:
        super().__init__(rig)
        self.protocol = protocol
        from insitem.acquisition.live_analysis import LiveLiProfile

        self.live_profile = LiveLiProfile.from_protocol(protocol)

    def position_axis_nm(self, settings: CameraSettings) -> tuple[float, float]:
        """From the TEM's magnification (`LENS:MAG?`) and the camera's pixel pitch, or the camera's
        measured calibration (`GifCamera.position_axis_m`): distance along the slit from its
        first edge, as on the simulated rig (docs/decisions/0006-hardware-position-axis.md)."""
        magnification = self.rig.microscope.lens.magnification
        scale_m, offset_m = self.rig.camera.position_axis_m(settings, magnification, self.protocol.spectrometer.slit.length)
        return scale_m * 1e9, offset_m * 1e9


class SimRigBundle(RigBundle):
    """The simulated rig: devices over one SimWorld, with ground truth and world checkpoints."""

    def __init__(self, rig: Rig, world: Any, protocol: Protocol) -> None:
        super().__init__(rig)
        from insitem.acquisition.runfile import GroundTruthSpec
        from insitem.acquisition.windows import camera_settings

        self.world = world
        self.protocol = protocol
        first = camera_settings(protocol, protocol.spectrometer.windows[0].name)
        self._gt_y = world.binned_row_positions_m(first, rig.camera.sensor_shape[0])
        self.ground_truth_spec = GroundTruthSpec(n_positions=len(self._gt_y), position_m=tuple(float(y) for y in self._gt_y))
        self.ground_truth = lambda: world.ground_truth(self._gt_y)
        from insitem.acquisition.live_analysis import LiveLiProfile

        self.live_profile = LiveLiProfile.from_protocol(protocol)

    @classmethod
    def create(cls, protocol: Protocol, clock: Clock, resume_from: Path | None = None) -> "SimRigBundle":
        from insitem.simulators.devices import SimCamera, SimPotentiostat
        from insitem.simulators.microscope import SimMicroscope
        from insitem.simulators.world import SimWorld

        world = SimWorld.from_protocol(protocol, clock)
        if resume_from is not None:
            state = _checkpoint_path(resume_from)
            if state.is_file():
                import json

                world.load_state(json.loads(state.read_text()))
        rig = Rig(SimPotentiostat(world, protocol.instruments.potentiostat.model), SimCamera(world), SimMicroscope(world.optics, position=world.position), clock)
        return cls(rig, world, protocol)

    def position_axis_nm(self, settings: CameraSettings) -> tuple[float, float]:
        y = self.world.binned_row_positions_m(settings, self.rig.camera.sensor_shape[0])
        start = self.world.params.slit_start_y_m
        scale = float(y[1] - y[0]) if len(y) > 1 else 1e-9
        return scale * 1e9, float(y[0] - start) * 1e9

    def checkpoint(self, run_file: Path) -> None:
        import json

        path = _checkpoint_path(run_file)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.world.state_dict(), default=_json_default))
        tmp.replace(path)


def _checkpoint_path(run_file: Path) -> Path:
    return run_file.with_name(run_file.name + ".world.json")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer, np.bool_)):
        return o.item()
    raise TypeError(type(o).__name__)
