"""Every shipped protocol through the real drivers against emulators served for it (issue 19).

Each protocol runs `insitem run NAME --hardware --time-scale K` against `start_servers(NAME,
<its instruments>, time_scale=K)` (what `insitem serve --protocol NAME --time-scale K` starts):
the real pyvisa/pyvisa-py Keithley driver, the SerialEMCCD socket client and the TEM client, the
safety supervisor holding its 2 s wall-time lease, PC-timed stairs (decision 0010), on a clock
that runs K simulated seconds per wall second on both sides
(docs/decisions/0021-paced-clock-hardware-runs.md).

K per protocol: the wall time of these runs is set by the simulated duration / K and by the
emulated camera, which synthesizes and sends every frame (0.3-0.8 s of wall time each on a
2-core machine, whatever K is). K is chosen so the simulated duration takes about as long as the
frames do; a higher K only makes every read-out cost more simulated time. loopback-hold (15 s, 3
frames) runs in the default suite; the others are `slow` (wall times measured in the report of
the branch and in README "Hardware runs").
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from insitem.acquisition.runfile_read import RunFileReader
from insitem.drivers.emulated import announcement
from insitem.protocols.loader import library_names

from paced_run import PacedRun, planned_readings, run_against_emulators

pytestmark = pytest.mark.wire

#: (protocol, time scale, slow): frames through the socket and simulated duration in the comments
CASES = [
    pytest.param("loopback-hold", 5.0, id="loopback-hold"),  # 15 s, 3 frames: ~4 s
    pytest.param("micro-battery-lagp", 100.0, id="micro-battery-lagp", marks=pytest.mark.slow),  # 50 min, 51 frames
    pytest.param("si-nanoparticle-hold", 10.0, id="si-nanoparticle-hold", marks=pytest.mark.slow),  # 10 min, 120 frames
    pytest.param("ex-situ-lasgtp", 2000.0, id="ex-situ-lasgtp", marks=[pytest.mark.slow, pytest.mark.timeout(1800)]),  # 83 h, 35 frames, 200 000 stairs
    pytest.param("in-situ-lasgtp", 20.0, id="in-situ-lasgtp", marks=[pytest.mark.slow, pytest.mark.timeout(2400)]),  # 101 min, 717 frames
]


README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_shipped_protocol_is_run_here_as_the_readme_documents_it() -> None:
    """One README command per shipped protocol, with the time scale its test here runs at
    (loopback-hold is documented in real time, which tests/acquisition/test_hardware_loopback.py
    runs; here it checks the paced path at K = 5)."""
    tested = {c.values[0]: c.values[1] for c in CASES}
    assert set(tested) == set(library_names())
    documented: dict[str, float] = {}
    rows = [line for line in README.read_text(encoding="utf-8").splitlines() if line.lstrip().startswith("| ")]
    for m in re.finditer(r"`insitem serve --protocol ([\w-]+)(?: --time-scale ([0-9.]+))?`", "\n".join(rows)):
        assert m.group(1) not in documented, f"{m.group(1)} documented twice"
        documented[m.group(1)] = float(m.group(2) or 1.0)
    assert documented == {**tested, "loopback-hold": 1.0}


@pytest.mark.parametrize(("name", "time_scale"), CASES)
def test_shipped_protocol_runs_on_the_wire(name: str, time_scale: float, tmp_path: Path) -> None:
    run = run_against_emulators(name, time_scale, tmp_path / f"{name}.h5")
    _assert_completed_and_safe(run)


def _assert_completed_and_safe(run: PacedRun) -> None:
    assert run.status == 0
    # safe state read back from the emulators themselves
    assert run.output_on is False
    assert run.beam_blanked is True
    assert run.applied_V is None  # the cell is open circuit
    with RunFileReader(run.path) as r:
        assert r.status == "completed"
        # every planned spectrum image, whole (sub-exposures summed), none flagged partial
        assert {w: r.n_exposures(w) for w in r.windows} == run.plan.exposures_per_window()
        # the drift-tracking frames (in-situ-lasgtp: one before each group), in their own signal
        assert (r.n_exposures(r.tracking_window) if r.tracking_window else 0) == len(run.plan.tracking)
        for w in r.windows:
            rec = r.exposure_records(w)
            if "partial" in rec:
                assert not rec["partial"].any()
            planned = [e for e in run.plan.images if e.window == w and not e.tracking]
            # exposure times and the schedule are simulated seconds (the paced clock), never early
            np.testing.assert_allclose(rec["exposure_s"], [e.exposure_s * e.n_subframes for e in planned], rtol=1e-6)
            # every start at or after its planned time (the run's start offset is >= 0): a clock that
            # ran the schedule in wall seconds would start the later exposures early. How late they
            # come is the machine's load times K (micro-battery-lagp at K = 100 under a CI run:
            # 1-3 wall s, 95-303 simulated s), so lateness is not bounded here
            late_s = rec["t_start_s"] - np.array([e.t_start_s for e in planned])
            assert np.all(late_s >= -1e-3), late_s
        # one reading per stair with the output on, at the instruments' own times
        ec = r.electrochemistry()
        assert len(ec["t_s"]) == planned_readings(run.plan) > 0
        assert (ec["t_s"][1:] > ec["t_s"][:-1]).all()
    # every sub-exposure crossed the socket (dark references come on top)
    assert run.frames_acquired >= len(run.plan.exposures)
    # the run recorded that it ran against emulators paced at its own scale
    mark = announcement(run.time_scale)
    assert run.identity_serials["potentiostat"] == mark
    assert run.identity_serials["microscope"] == mark
