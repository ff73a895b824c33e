"""Fault cell: drift beyond the image shift's range is taken back by the stage, and a stage that
refuses the move follows `drift.on_refusal`.

The wire path is the real one (`Keithley2450`, `GifCamera`, `TemMicroscope` over loopback TCP to
emulators sharing one simulated world, real clock), as in test_drift_refusal.py: the specimen
drifts 600 nm/min (3x that while it settles after the start), a low-loss image every second of an 8 s rest
tracks it, and the protocol allows only 1 nm of image shift (`drift.max_shift`), so the first
correction goes to the stage (`STAG:Y`, read back with `STAG:X?;Y?;Z?;ALPH?`): even images a
run that fell behind takes back to back (a few tenths of a second apart) see the specimen move
more than that 1 nm. At 120 nm/min such images moved ~1 nm: a CI run under load recorded
`corrected` (the image shift took it) and ended without asking the stage. The stage's
position and the image shift are read from the emulator afterwards, never from the runner. With
the emulated stage's y travel cut to +-1 nm the move is refused (-222 "Data out of range"):
`continue` records the refusal and measures on, `stop` ends the run with a reason naming it.
Either way the emulators read output off and beam blanked.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from faultkit import drift_rest_protocol, instruments_safe, open_rig

import insitem.simulators.microscope as sim_microscope
from insitem.acquisition.launch import runfile_config
from insitem.acquisition.runfile import RunFile
from insitem.acquisition.runfile_read import RunFileReader
from insitem.acquisition.runner import Runner
from insitem.protocols.loader import load_and_plan
from insitem.simulators.serve import start_servers

pytestmark = [pytest.mark.faults, pytest.mark.wire]


def protocol_text(on_refusal: str) -> str:
    return drift_rest_protocol(
        "drift-stage",
        "an 8 s rest with a low-loss image every second, the specimen drifting fast, 1 nm of image shift",
        f"""\
  mode: correct
  window: low-loss
  dead_band: 0.5 nm
  max_shift: 1 nm
  max_stage_travel: 2 um
  on_refusal: {on_refusal}
""",
        drift_rate="600 nm/min",
    )

START_STAGE_Y_M = 0.4e-6  # where the operator left the stage


def _run(tmp_path: Path, on_refusal: str) -> tuple[object, dict, list[str], int, int, str, str, float, tuple[float, float]]:
    path = tmp_path / "drift-stage.yaml"
    path.write_text(protocol_text(on_refusal), encoding="utf-8")
    protocol, plan = load_and_plan(str(path))
    with start_servers(str(path), ["keithley2450", "gif", "tem"]) as servers:
        servers.world.position.move_stage(y_m=START_STAGE_Y_M)
        bundle = open_rig(servers, protocol, timeout_s=10.0, camera_timeout_s=30.0, readout_timeout_s=30.0)
        try:
            out = tmp_path / "run.h5"
            rf = RunFile.create(out, runfile_config(plan, bundle, path.read_text(encoding="utf-8"), bundle.identify()))
            result = Runner(plan, bundle.rig, rf).run()
        finally:
            bundle.close()
        off, blanked = instruments_safe(servers)
        stage_y = servers.world.position.stage["y_m"]
        shift = servers.world.position.image_shift_m
    assert off and blanked
    with RunFileReader(out) as r:
        drift = r.drift()
        events = [e.message for e in r.events()]
        n_images = r.n_exposures("low-loss")
        status, reason = r.status, r.status_reason
    planned = len(plan.images)
    return result, drift, events, n_images, planned, status, reason, stage_y, shift


def test_drift_beyond_the_image_shift_moves_the_stage(tmp_path: Path) -> None:
    result, drift, events, n_images, planned, status, _, stage_y, shift = _run(tmp_path, "continue")
    assert result.status == status == "completed"  # type: ignore[attr-defined]
    assert n_images == planned
    actions = list(drift["action"])
    assert "refused" not in actions and "limited" not in actions, actions
    moves = [k for k, a in enumerate(actions) if a == "stage"]
    assert moves and actions.index("stage-read") < moves[0]
    assert drift["stage_y_m"][actions.index("stage-read")] == pytest.approx(START_STAGE_Y_M)
    # the emulator's stage stands where the last move read it back, moved against the drift (+y)
    assert stage_y == pytest.approx(float(drift["stage_y_m"][moves[-1]]), abs=1e-12)
    assert stage_y < START_STAGE_Y_M - 0.5e-9
    assert abs(stage_y - START_STAGE_Y_M) <= 2e-6  # drift.max_stage_travel
    # every row records the image shift in force; each stage move returned it to its start (0)
    assert shift[1] == pytest.approx(float(drift["image_shift_m"][-1]), abs=1e-15)
    assert abs(shift[1]) <= 1e-9 * (1 + 1e-9)  # drift.max_shift
    for k in moves:
        assert drift["image_shift_m"][k] == 0.0
    assert any("stage y now" in m for m in events)


@pytest.mark.parametrize("on_refusal", ["continue", "stop"])
def test_a_refused_stage_move_follows_on_refusal(tmp_path: Path, on_refusal: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sim_microscope.STAGE_LIMITS, "y_m", (START_STAGE_Y_M - 0.1e-9, 1e-3))  # no room to move -y
    result, drift, events, n_images, planned, status, reason, stage_y, shift = _run(tmp_path, on_refusal)
    actions = list(drift["action"])
    table = [(str(a), round(float(t), 2), round(float(m) * 1e9, 1)) for a, t, m in zip(actions, drift["t_s"], drift["measured_m"])]
    assert actions.count("refused") == 1 and "stage" not in actions, table
    assert stage_y == START_STAGE_Y_M and shift == (0.0, 0.0)  # nothing moved
    k = actions.index("refused")
    assert drift["stage_y_m"][k] == pytest.approx(START_STAGE_Y_M) and not math.isnan(drift["measured_m"][k])
    if on_refusal == "continue":
        assert result.status == status == "completed"  # type: ignore[attr-defined]
        assert n_images == planned and actions.count("measured") == planned
        assert any("refused by the microscope" in m and "measuring only" in m for m in events)
    else:
        assert result.status == status and status in ("failed", "stopped")  # type: ignore[attr-defined]
        assert "drift correction refused by the microscope" in reason and "on_refusal: stop" in reason
        assert n_images < planned
    assert np.all(np.isnan(drift["dose_e_per_m2"][np.array(actions) != "measured"]))
