"""The paced clock of hardware runs against emulators, and its safety check (decision 0021).

A time scale other than 1 runs only when every instrument announces that it is an insitem
emulator paced at the same scale: a real SourceMeter (here: an emulator in real time, which keeps
the real instrument's *IDN?) is never driven K times too fast. The refusal is one line, exit 2,
before anything is switched on, with no run file written; the emulators' own state shows that
nothing was touched.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from insitem.cli.main import main
from insitem.drivers.clock import PacedClock, RealClock
from insitem.drivers.emulated import DM_TIME_SCALE_FUNCTION, announced_time_scale, announcement
from insitem.drivers.gif.camera import GifCamera, GifCameraConfig
from insitem.drivers.keithley.k2450 import Keithley2450
from insitem.drivers.tem.client import TemMicroscope
from insitem.simulators.serve import ServerSet, start_servers

pytestmark = pytest.mark.wire

PROTOCOL = "loopback-hold"  # its potentiostat is a Keithley 2450


# -- the announcement ---------------------------------------------------------------------------


@pytest.mark.parametrize("k", [2.0, 50.0, 1500.0, 0.5, 123.456789])
def test_announcement_reads_back(k: float) -> None:
    assert announced_time_scale(announcement(k)) == k
    assert announced_time_scale(f"KEITHLEY INSTRUMENTS,MODEL 2450,{announcement(k)},1.7.12b") == k


@pytest.mark.parametrize("text", ["04096331", "4096331", "", "insitem-emulator", "insitem-emulator x", "insitem-emulator x0",
                                  "insitem-emulator x-5", "insitem-emulator xnan", "insitem emulator x10"])
def test_real_identities_announce_nothing(text: str) -> None:
    assert announced_time_scale(text) is None


# -- what the emulators announce ----------------------------------------------------------------


def _ask(servers: ServerSet) -> tuple[str, float | None, str]:
    """The Keithley's *IDN? serial, the GIF's DM-script answer and the TEM's serial, through the real drivers."""
    pot = Keithley2450(servers.resources["potentiostat"])
    cam = GifCamera(GifCameraConfig(resource=servers.resources["camera"]))
    scope = TemMicroscope(servers.resources["microscope"])
    try:
        return pot.identify().serial, cam.emulated_time_scale(), scope.identify().serial
    finally:
        for dev in (pot, cam, scope):
            dev.close()


def test_paced_emulators_announce_their_time_scale() -> None:
    with start_servers(PROTOCOL, ["keithley2450", "gif", "tem"], time_scale=40.0) as servers:
        assert isinstance(servers.world.clock, PacedClock) and servers.world.clock.speed == 40.0
        assert _ask(servers) == (announcement(40.0), 40.0, announcement(40.0))


def test_emulators_in_real_time_keep_the_real_identities() -> None:
    with start_servers(PROTOCOL, ["keithley2450", "gif", "tem"]) as servers:
        assert isinstance(servers.world.clock, RealClock)
        pot_serial, cam_scale, tem_serial = _ask(servers)
        assert pot_serial == "04096331"  # the 2450's own *IDN? serial field
        assert cam_scale is None  # no DM function of that name, asked without a script error
        assert DM_TIME_SCALE_FUNCTION.lower() not in servers.servers["gif"].script.functions
        assert announced_time_scale(tem_serial) is None
        assert not servers.servers["gif"].errors  # DoesFunctionExist answered 0, nothing threw


def test_paced_world_runs_k_times_faster_than_the_wall() -> None:
    """An emulated 2 s exposure at K = 40 takes 50 ms of simulated-clock-paced wall time plus the
    synthesis; the world's clock reads K x the wall interval."""
    with start_servers(PROTOCOL, ["gif"], time_scale=40.0) as servers:
        clock = servers.world.clock
        w0, t0 = time.monotonic(), clock.now()
        clock.sleep(20.0)  # 20 simulated s
        w1, t1 = time.monotonic(), clock.now()
    assert t1 - t0 >= 20.0
    assert w1 - w0 >= 20.0 / 40.0  # never faster than K (a lower bound: no wall-clock threshold above)
    assert (t1 - t0) == pytest.approx(40.0 * (w1 - w0), rel=0.05, abs=0.2)


# -- the run refuses a mismatch, before touching anything ---------------------------------------


def _run(servers: ServerSet, out: Path, *scale: str) -> int:
    argv = ["run", PROTOCOL, "--hardware", *scale, "--out", str(out), "--no-progress", "--no-figures"]
    for role, resource in servers.resources.items():
        argv += ["--resource", f"{role}={resource}"]
    return main(argv)


def _untouched(servers: ServerSet) -> None:
    assert servers.smu is not None and servers.smu.output_on is False
    assert servers.servers["tem"].microscope.beam.blanked is True
    assert servers.world.optics.total_dose_e_per_m2() == 0.0  # the beam never came on
    assert servers.world.cell.charge_passed_C == 0.0  # the cell was never sourced


@pytest.mark.parametrize(
    ("served", "asked", "says"),
    [
        (1.0, "50", "the potentiostat at TCPIP0::127.0.0.1::"),  # real-time emulators look like real instruments
        (20.0, "50", "is an insitem emulator paced at 20 simulated s per wall s; give run and serve the same --time-scale"),
        (20.0, None, "is an insitem emulator paced at 20 simulated s per wall s"),  # run in real time against paced emulators
    ],
)
def test_run_refuses_a_time_scale_the_instruments_do_not_announce(
    served: float, asked: str | None, says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "refused.h5"
    with start_servers(PROTOCOL, ["keithley2450", "gif", "tem"], time_scale=served) as servers:
        status = _run(servers, out, *(["--time-scale", asked] if asked else []))
        _untouched(servers)
    err = capsys.readouterr().err
    assert status == 2
    lines = [ln for ln in err.splitlines() if ln.startswith("insitem run:")]
    assert len(lines) == 1 and says in lines[0], err
    if served == 1.0:
        assert "is not an insitem emulator" in lines[0] and "insitem serve --time-scale 50" in lines[0]
    assert "Traceback" not in err
    assert not out.exists()


def test_only_the_camera_unpaced_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every instrument is asked: a paced Keithley and TEM with a GIF in real time is refused too."""
    with start_servers(PROTOCOL, ["keithley2450", "tem"], time_scale=50.0) as paced, \
            start_servers(PROTOCOL, ["gif"]) as real_time:
        argv = ["run", PROTOCOL, "--hardware", "--time-scale", "50", "--out", str(tmp_path / "x.h5"), "--no-progress",
                "--no-figures", "--resource", f"camera={real_time.resources['camera']}"]
        for role in ("potentiostat", "microscope"):
            argv += ["--resource", f"{role}={paced.resources[role]}"]
        assert main(argv) == 2
        _untouched(paced)
    assert "the camera at" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "says"), [
    (["--hardware", "--time-scale", "0"], "insitem run: --time-scale 0.0: give a positive number"),
    (["--hardware", "--time-scale", "-3"], "insitem run: --time-scale -3.0: give a positive number"),
    (["--hardware", "--time-scale", "inf"], "insitem run: --time-scale inf: give a positive number"),
    (["--sim", "--time-scale", "10"], "pace a dry run with --realtime --speed"),
])
def test_bad_time_scale_is_one_line(argv: list[str], says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["run", PROTOCOL, *argv, "--out", str(tmp_path / "x.h5"), "--no-progress", "--no-figures",
                   "--resource", "potentiostat=TCPIP0::127.0.0.1::9::SOCKET"])
    err = capsys.readouterr().err
    assert status == 2
    assert says in err and len(err.strip().splitlines()) == 1, err


# -- the command line ---------------------------------------------------------------------------


def test_serve_prints_the_paced_run_line_and_the_run_completes(tmp_path: Path) -> None:
    """`insitem serve --protocol loopback-hold --time-scale 5` in its own process, then the run it
    prints in another: the README's two commands, verbatim."""
    serve = subprocess.Popen(
        [sys.executable, "-m", "insitem.cli", "serve", "--protocol", PROTOCOL, "--time-scale", "5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert serve.stderr is not None
        run_line = ""
        deadline = time.monotonic() + 120  # generous: start-up on a loaded machine
        while time.monotonic() < deadline:
            line = serve.stderr.readline()
            if not line:
                break
            if line.startswith("# then: "):
                run_line = line.removeprefix("# then: ").strip()
                break
        assert run_line.startswith(f"insitem run {PROTOCOL} --hardware --time-scale 5 --resource potentiostat=TCPIP0::")
        words = run_line.split()[1:] + ["--out", str(tmp_path / "cli.h5"), "--no-progress", "--no-figures"]
        done = subprocess.run([sys.executable, "-m", "insitem.cli", *words], capture_output=True, text=True,
                              timeout=240)
        assert done.returncode == 0, done.stderr
        assert "run completed - 3 exposures, 15 potentiostat readings" in done.stderr
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.communicate(timeout=120)
    assert serve.returncode == 0


@pytest.mark.parametrize("k", ["0", "-1", "nan"])
def test_serve_refuses_a_bad_time_scale_in_one_line(k: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--protocol", PROTOCOL, "--time-scale", k]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("insitem serve: --time-scale ") and "give a positive number" in err
    assert len(err.splitlines()) == 1
