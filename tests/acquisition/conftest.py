"""Fixtures of the runner tests: a `Runner` on the simulated rig writing a fresh run file."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from insitem.acquisition.rig import SimRigBundle
from insitem.acquisition.launch import window_specs
from insitem.acquisition.runfile import RunFile, RunFileConfig
from insitem.acquisition.runner import NullProgress, Runner
from insitem.drivers.clock import Clock, VirtualClock
from insitem.drivers.errors import DeviceTimeoutError
from insitem.protocols.loader import load_and_plan, loads, resolve
from insitem.protocols.plan import make_plan

SimRun = tuple[SimRigBundle, Runner, Path]


class CameraDies:
    """The simulated camera with a read-out that raises like a device that stops answering."""

    def __init__(self, camera: Any, fail_on: int) -> None:
        self._camera = camera
        self._n = 0
        self._fail_on = fail_on

    def __getattr__(self, name: str) -> Any:
        return getattr(self._camera, name)

    def read_frame(self) -> Any:
        self._n += 1
        if self._n == self._fail_on:
            raise DeviceTimeoutError("no answer within 10 s", "sim://camera")
        return self._camera.read_frame()


class StopAfter(NullProgress):
    """Asks the runner for a graceful stop once `n` images are written."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.done = 0
        self.runner: Runner | None = None

    def exposure_done(self, exposure, data, t_s) -> None:  # noqa: ANN001
        self.done += 1
        if self.done == self.n and self.runner is not None:
            self.runner.request_stop()


@pytest.fixture
def sim_run(tmp_path: Path) -> Callable[..., SimRun]:
    """`sim_run(protocol, clock=VirtualClock(), progress=None, camera_fails_on=None, stop_after=None)`
    -> (bundle, runner, path of the run file in tmp_path).

    `protocol` is a shipped name or a file (as `insitem run` takes them) or the YAML text itself;
    `camera_fails_on=k`: the k-th frame read-out raises `DeviceTimeoutError` (sim://camera);
    `stop_after=n`: a graceful stop is requested once n images are written (the progress).
    """

    def make(
        protocol: str,
        clock: Clock | None = None,
        progress: NullProgress | None = None,
        camera_fails_on: int | None = None,
        stop_after: int | None = None,
    ) -> SimRun:
        if "\n" in protocol:
            text = protocol
            proto = loads(text)
            plan = make_plan(proto)
        else:
            text = resolve(protocol).read_text(encoding="utf-8")
            proto, plan = load_and_plan(protocol)
        bundle = SimRigBundle.create(proto, clock if clock is not None else VirtualClock())
        config = RunFileConfig(
            title=proto.name,
            windows=window_specs(plan, bundle),
            beam_energy_keV=300,
            convergence_angle_mrad=0.5,
            collection_angle_mrad=10,
            protocol_text=text,
            instruments=bundle.identify(),
            ground_truth=bundle.ground_truth_spec,
        )
        path = tmp_path / "run.h5"
        if stop_after is not None:
            assert progress is None, "stop_after brings its own progress"
            progress = StopAfter(stop_after)
        runner = Runner(plan, bundle.rig, RunFile.create(path, config), progress=progress, ground_truth=bundle.ground_truth)
        if isinstance(progress, StopAfter):
            progress.runner = runner
        if camera_fails_on is not None:
            bundle.rig.camera = CameraDies(bundle.rig.camera, fail_on=camera_fails_on)  # type: ignore[assignment]
        return bundle, runner, path

    return make
