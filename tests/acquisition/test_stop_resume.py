"""A stop keeps what was measured, and a resumed run keeps its books.

Summed images of 4 sub-exposures on the simulated rig, virtual clock: a stop asked for mid-image
(first Ctrl-C) finishes every sub-exposure; an immediate stop (second Ctrl-C, SIGTERM) stores the
sub-exposures read so far, flagged partial, with the true beam-on time and dose - checked against
the dose the simulated sample received (the world's own account, not the runner's). Then
`insitem run --resume` on the stopped file: step table, event times, cycles, dose budget. And the
displays: figures break their lines at a resume, status lines without a terminal.
"""

from __future__ import annotations

import contextlib
import io
import math
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from rich.console import Console
from shipped_protocol import variant

from insitem.cli.main import main
from insitem.acquisition.figures import _thin, with_gaps
from insitem.acquisition.progress import LiveProgress
from insitem.acquisition.rig import SimRigBundle
from insitem.acquisition.runfile_read import RunFileReader
from insitem.acquisition.runner import NullProgress, Runner, StopNow
from insitem.protocols.loader import loads
from insitem.protocols.plan import make_plan
from insitem.protocols.units import E_PER_A2

SimRun = Callable[..., tuple[SimRigBundle, Runner, Path]]

SUB_S = 0.5  # each sub-exposure: 2 s in 4 frames
#: loopback-hold with 2 s Li-K images summed from 4 frames: a 3-cycle CV (images every 6 s), then a hold
PROTOCOL = variant(
    "loopback-hold",
    ("name: loopback-hold", "name: summed-images"),
    ("exposure: 1 s", "exposure: 2 s\n      frames: 4"),
    steps="""\
steps:
  - cv:
      start: -0.1 V
      vertices: [-0.2 V]
      end: -0.1 V
      sweep_rate: 20 mV/s
      step: 10 mV
      cycles: 3
      exposures:
        - windows: [li-k]
          every: 6 s
  - hold:
      potential: -0.15 V
      duration: 6 s
      exposures:
        - windows: [li-k]
          at_start: true
""",
)


class _Hooks(NullProgress):
    """Calls `on_start(k)` as the k-th sub-exposure (from 1) starts."""

    def __init__(self, on_start: Callable[[int], None]) -> None:
        self.started = 0
        self.on_start = on_start

    def exposure_started(self, exposure: Any, t_s: float) -> None:
        self.started += 1
        self.on_start(self.started)


class _StopAtClock:
    """The runner's clock, raising StopNow (as the SIGTERM handler does) at an armed time."""

    def __init__(self, clock: Any) -> None:
        self._clock = clock
        self.stop_at = math.inf

    def __getattr__(self, name: str) -> Any:
        return getattr(self._clock, name)

    def sleep_until(self, t_s: float) -> None:
        if t_s > self.stop_at:
            self._clock.sleep_until(self.stop_at)
            raise StopNow("SIGTERM: stopped at once")
        self._clock.sleep_until(t_s)


def _world_dose(bundle: SimRigBundle) -> float:
    return float(bundle.world.optics.total_dose_e_per_m2())


def test_ctrl_c_mid_image_finishes_every_sub_exposure(sim_run: SimRun) -> None:
    holder: dict[str, Runner] = {}
    progress = _Hooks(lambda k: holder["runner"].request_stop() if k == 2 else None)
    bundle, runner, path = sim_run(PROTOCOL, progress=progress)
    holder["runner"] = runner
    result = runner.run()
    assert result.status == "stopped"
    assert progress.started == 4  # sub-exposures 3 and 4 ran after the stop was asked for
    with RunFileReader(path) as r:
        rec = r.exposure_records("li-k")
        assert r.n_exposures("li-k") == 1
        assert rec["exposure_s"][0] == pytest.approx(4 * SUB_S)
        assert not rec["partial"][0]
        assert np.isfinite(r.exposure("li-k", 0)).all()
        assert [s.status for s in r.steps()] == ["interrupted"]
    assert world_and_record_agree(bundle, rec)


def world_and_record_agree(bundle: SimRigBundle, rec: dict[str, np.ndarray]) -> bool:
    return math.isclose(_world_dose(bundle), float(np.sum(rec["dose_e_per_m2"])), rel_tol=1e-6)


def test_immediate_stop_mid_image_stores_the_partial_sum_with_its_true_beam_time(sim_run: SimRun) -> None:
    holder: dict[str, Any] = {}

    def arm(k: int) -> None:
        if k == 3:  # a SIGTERM 0.2 s into the third sub-exposure
            holder["clock"].stop_at = holder["clock"].now() + 0.2

    bundle, runner, path = sim_run(PROTOCOL, progress=_Hooks(arm))
    holder["clock"] = runner.clock = _StopAtClock(runner.clock)
    result = runner.run()
    assert result.status == "interrupted" and "SIGTERM" in result.reason
    assert bundle.world.optics.blanked and bundle.world.applied_V is None
    with RunFileReader(path) as r:
        rec = r.exposure_records("li-k")
        assert r.n_exposures("li-k") == 1
        assert bool(rec["partial"][0])
        assert rec["exposure_s"][0] == pytest.approx(2 * SUB_S)  # two sub-exposures were read out
        assert rec["beam_on_s"][0] == pytest.approx(2 * SUB_S + 0.2, abs=1e-6)  # the beam was on longer
        image = r.exposure("li-k", 0)
        steps = r.steps()
        events = [e.message for e in r.events()]
    assert np.isfinite(image).all() and image.mean() > 0
    # the record's dose is what the sample received: the world's account of the beam
    assert world_and_record_agree(bundle, rec)
    assert rec["dose_e_per_m2"][0] == pytest.approx(bundle.rig.microscope.beam.dose_rate_e_per_m2_s * (2 * SUB_S + 0.2), rel=1e-6)
    # the step cut short ends interrupted at a real time, not running with NaN
    assert [s.status for s in steps] == ["interrupted"] and math.isfinite(steps[0].t_end_s)
    assert any("stored as partial" in m for m in events)


def test_immediate_stop_in_the_first_sub_exposure_stores_no_image_but_says_what_the_beam_did(sim_run: SimRun) -> None:
    holder: dict[str, Any] = {}

    def arm(k: int) -> None:
        if k == 1:
            holder["clock"].stop_at = holder["clock"].now() + 0.3

    bundle, runner, path = sim_run(PROTOCOL, progress=_Hooks(arm))
    holder["clock"] = runner.clock = _StopAtClock(runner.clock)
    assert runner.run().status == "interrupted"
    with RunFileReader(path) as r:
        assert r.n_exposures("li-k") == 0
        warnings = [e.message for e in r.events() if e.level == "WARNING"]
    said = [m for m in warnings if "no image stored" in m]
    assert len(said) == 1, warnings
    # the beam time it states is what the sample received (the simulated potentiostat's sweep may
    # carry the virtual clock past the stop time before the runner sees it: 0.3-0.5 s)
    beam_s = float(re.search(r"([0-9.]+) s of beam", said[0]).group(1))
    assert 0.3 <= beam_s <= SUB_S + 1e-9
    assert _world_dose(bundle) == pytest.approx(bundle.rig.microscope.beam.dose_rate_e_per_m2_s * beam_s, rel=1e-3)


def test_resume_keeps_the_books(sim_run: SimRun, tmp_path: Path) -> None:
    holder: dict[str, Runner] = {}
    # a graceful stop during the second image of the CV
    progress = _Hooks(lambda k: holder["runner"].request_stop() if k == 6 else None)
    bundle, runner, path = sim_run(PROTOCOL, progress=progress)
    holder["runner"] = runner
    assert runner.run().status == "stopped"
    with RunFileReader(path) as r:
        ec = r.electrochemistry()
        dose_before = float(np.sum(r.exposure_records()["dose_e_per_m2"]))
    # the reading that closed the stopped step belongs to the cycle it was taken in
    assert ec["cycle"][-1] == ec["cycle"][-2] == 1
    code = main(["run", "--resume", str(path), "--no-progress", "--no-figures"])
    assert code == 0
    with RunFileReader(path) as r:
        steps = r.steps()
        events = r.events()
        ec = r.electrochemistry()
        rec = r.exposure_records()
        status = r.status
    assert status == "completed"
    assert [s.status for s in steps] == ["completed", "completed"]
    assert all(math.isfinite(s.t_start_s) and math.isfinite(s.t_end_s) for s in steps)
    resumed = [e for e in events if e.message.startswith("resumed run file")]
    assert len(resumed) == 1 and math.isfinite(resumed[0].t_s)
    assert all(math.isfinite(e.t_s) for e in events)
    assert np.all(np.diff(ec["t_s"]) > 0)
    assert not ec["compliance"].any()
    # cycles only in the CV step, in order within each attempt; the hold has none
    assert set(np.unique(ec["cycle"][ec["step"] == 0])) <= {1, 2, 3}
    assert np.all(ec["cycle"][ec["step"] == 1] == 0)
    # 2 images before the stop, then the CV again (5) and the hold (1); the dose adds up
    assert len(rec["t_start_s"]) == 2 + 6 and not rec["partial"].any()
    assert rec["total_dose_e_per_m2"][-1] == pytest.approx(float(np.sum(rec["dose_e_per_m2"])), rel=1e-9)
    assert float(np.sum(rec["dose_e_per_m2"])) > dose_before


def test_figures_break_lines_at_a_resume_and_at_pauses() -> None:
    t = np.array([0.0, 1.0, 2.0, 3.0, 50.0, 51.0, 52.0, 53.5, 54.5])
    ec = {"t_s": t, "voltage_V": t * 0.01, "current_A": t * 1e-9, "cycle": np.arange(9, dtype=np.int32), "step": np.zeros(9, np.int32)}
    out = with_gaps(ec, breaks_s=[53.2])
    nan_rows = np.flatnonzero(np.isnan(out["t_s"]))
    assert list(nan_rows) == [4, 8]  # before the 47 s pause and before the resume at 53.2 s
    assert np.isnan(out["voltage_V"][nan_rows]).all()
    assert list(out["cycle"][nan_rows]) == [3, 6]
    assert np.array_equal(out["t_s"][~np.isnan(out["t_s"])], t)
    # thinning a long record keeps every gap row
    long_t = np.arange(1_000_000, dtype=float)
    long_t[123_457] = np.nan
    assert 123_457 in _thin(long_t)


def test_status_lines_without_a_terminal() -> None:
    plan = make_plan(loads(PROTOCOL))
    buf = io.StringIO()
    now = {"t": 0.0}
    progress = LiveProgress(plan, lambda: now["t"], console=Console(file=buf, width=300), status_interval_s=0.05)
    assert not progress.enabled  # a StringIO is not a terminal
    with progress:
        progress.step_started(plan.steps[0], 0.0)
        progress.readings(np.array([1.0]), np.array([-0.125]), np.array([3.5e-10]), 1, 0)
        deadline = time.monotonic() + 30
        while buf.getvalue().count("STATUS") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    lines = [ln for ln in buf.getvalue().splitlines() if "STATUS" in ln]
    assert len(lines) >= 2
    assert "step 1/2 cv, cycle 1/3" in lines[0] and "-0.1250 V" in lines[0] and "3.500e-10 A" in lines[0]
    assert f"images 0/{len(plan.images)}" in lines[0]
    assert f"of {plan.dose_e_per_m2 / E_PER_A2:.4g} e/Å²" in lines[0]
    assert "wall-clock left" in lines[0]


def _paced_run(tmp_path: Path, *extra: str) -> tuple[Any, Path]:
    proto = tmp_path / "summed.yaml"
    proto.write_text(PROTOCOL, encoding="utf-8")
    out = tmp_path / "run.h5"
    cmd = [sys.executable, "-m", "insitem.cli", "run", str(proto), "--realtime", "--speed", "2",
           "--out", str(out), "--no-figures", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc, out


def _wait_for_line(proc: Any, needle: str, timeout_s: float = 120) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"no {needle!r} in {lines}")


@pytest.mark.slow
@pytest.mark.parametrize("second", [False, True], ids=["ctrl-c", "ctrl-c-twice"])
def test_ctrl_c_on_a_paced_run_keeps_the_image(tmp_path: Path, second: bool) -> None:
    """The CLI, not a tty, on a paced clock: Ctrl-C 0.6 s (simulated) into the first image's second
    sub-exposure keeps all 4 frames and exits 3; a second Ctrl-C right after stores the partial
    sum and exits 4. Status lines come every 0.5 s of wall time meanwhile."""
    proc, out = _paced_run(tmp_path, "--status-every", "0.5")
    try:
        lines = _wait_for_line(proc, "step 0 (cv) started")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until the first image's second sub-exposure runs
            with contextlib.suppress(Exception), RunFileReader(out) as r:
                if any("step 0" in e.message for e in r.events()):
                    break
            time.sleep(0.05)
        time.sleep(0.9)  # 1.8 s simulated: into the first image (0.5 s frames + read-out)
        proc.send_signal(signal.SIGINT)
        if second:
            time.sleep(0.3)
            proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = "".join(lines) + rest
    assert "Traceback" not in text
    assert proc.returncode == (4 if second else 3), text
    with RunFileReader(out) as r:
        rec = r.exposure_records("li-k")
        assert r.n_exposures("li-k") == 1
        assert bool(rec["partial"][0]) is second
        if second:
            # (the second Ctrl-C may land while the beam is on, or in the read-out between frames)
            assert rec["exposure_s"][0] < 4 * SUB_S and rec["beam_on_s"][0] >= rec["exposure_s"][0]
        else:
            assert rec["exposure_s"][0] == pytest.approx(4 * SUB_S)
        assert np.isfinite(r.exposure("li-k", 0)).all()
    assert "STATUS  step 1/2 cv" in text  # a status line without a terminal
