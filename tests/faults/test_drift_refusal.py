"""Fault cell: the microscope refuses a drift correction (image shift out of its range).

The wire path is the real one (`Keithley2450`, `GifCamera`, `TemMicroscope` over loopback TCP to
emulators sharing one simulated world, real clock). The specimen drifts fast (120 nm/min, 3x that
while it settles: a correction is due after the first second) and the emulated microscope's image
shift range is cut to +-0.2 nm (simulators/microscope.py `SHIFT_LIMIT_M`, +-2 um otherwise): the
correction the loop asks for is out of range and the microscope answers -222 "Data out of range". With
`drift.on_refusal: continue` the run records the refusal, warns, measures on and completes; with
`stop` it stops with a reason that names the refusal. Either way the emulators' own state shows
the output off, the beam blanked and the image shift where the operator left it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from faultkit import drift_rest_protocol, instruments_safe, open_rig

from insitem.acquisition.launch import runfile_config
from insitem.acquisition.runfile import RunFile
from insitem.acquisition.runfile_read import RunFileReader
from insitem.acquisition.runner import Runner
from insitem.protocols.loader import load_and_plan
import insitem.simulators.microscope as sim_microscope
from insitem.simulators.serve import start_servers

pytestmark = [pytest.mark.faults, pytest.mark.wire]


def protocol_text(on_refusal: str) -> str:
    return drift_rest_protocol(
        "drift-refused",
        "an 8 s rest with a low-loss image every second, the specimen drifting fast",
        f"""\
  mode: correct
  window: low-loss
  dead_band: 0.5 nm
  max_shift: 10 um
  on_refusal: {on_refusal}
""",
    )

TINY_RANGE_M = 0.2e-9  # the emulated microscope's image shift range: any correction is out of it
START_SHIFT_M = (0.0, 0.0)


@pytest.mark.parametrize("on_refusal", ["continue", "stop"])
def test_refused_correction_is_recorded_and_the_run_goes_on_or_stops(tmp_path: Path, on_refusal: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sim_microscope, "SHIFT_LIMIT_M", TINY_RANGE_M)
    path = tmp_path / "drift-refused.yaml"
    path.write_text(protocol_text(on_refusal), encoding="utf-8")
    protocol, plan = load_and_plan(str(path))
    planned = sum(len(step.exposures) for step in plan.steps)  # 4: at 0, 1, 2 and 3 s
    with start_servers(str(path), ["keithley2450", "gif", "tem"]) as servers:
        servers.world.position.set_image_shift(*START_SHIFT_M)
        # timeouts generous for a loaded machine
        bundle = open_rig(servers, protocol, timeout_s=10.0, camera_timeout_s=30.0, readout_timeout_s=30.0)
        try:
            out = tmp_path / "run.h5"
            rf = RunFile.create(out, runfile_config(plan, bundle, path.read_text(encoding="utf-8"), bundle.identify()))
            result = Runner(plan, bundle.rig, rf).run()
        finally:
            bundle.close()
        off, blanked = instruments_safe(servers)
        shift_after = servers.world.position.image_shift_m
    assert off and blanked
    assert shift_after == pytest.approx(START_SHIFT_M)  # nothing moved
    with RunFileReader(out) as r:
        r_drift = r.drift()
        actions = [a.decode() if isinstance(a, bytes) else str(a) for a in r_drift["action"]]
        events = [e.message for e in r.events()]
        n_images = r.n_exposures("low-loss")
        status, reason = r.status, r.status_reason
    assert actions.count("refused") == 1 and "corrected" not in actions, (actions, r_drift["measured_m"])
    if on_refusal == "continue":
        assert result.status == status == "completed"
        assert n_images == planned  # every planned image
        assert actions.count("measured") == planned  # measuring went on after the refusal
        assert any("refused by the microscope" in m and "measuring only" in m for m in events)
    else:
        assert result.status == status and status in ("failed", "stopped")
        assert "drift correction refused" in reason and "on_refusal: stop" in reason
        assert n_images < planned
