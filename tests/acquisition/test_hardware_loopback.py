"""`insitem run --hardware` end to end: the real drivers against the emulated instruments on loopback.

One `start_servers` world (Keithley 2450 SCPI over TCP, the SerialEMCCD socket, the TEM command
set) and the CLI's own `main([... "run", "--hardware", "--resource", ...])`: the run file must be
the same kind as a dry run of the same protocol (HyperSpy-loadable, same datasets and energy
calibration), and the coupled physics must come through the wires (the camera sees the beam the
TEM emulator unblanked; the cell is stepped once per interval of real time).

Real time passes on this path, so the protocol is short: the shipped loopback-hold, a 15 s hold
with a 1 s exposure every 5 s (3 exposures). The window is binned 6 x 1 like the other shipped
protocols (6 CCD rows per position pixel, every energy channel): the GIF socket carries one
binning, so the driver acquires at binning 1 and sums the rows
(docs/decisions/0005-gif-unequal-binning.md). 320 readout rows give 53 position pixels (318 rows
read) by 512 channels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from shipped_protocol import variant

from insitem.api import Progress
from insitem.cli.main import main
from insitem.acquisition.runfile_read import RunFileReader
from insitem.simulators.serve import ServerSet, start_servers

pytestmark = pytest.mark.wire

PROTOCOL = "loopback-hold"  # protocols/library/loopback-hold.yaml
HOLD_S = 15.0
EVERY_S = 5.0
N_EXPOSURES = 3  # at 0, 5 and 10 s of the hold



@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("loopback")


@pytest.fixture(scope="module")
def hardware_run(workdir: Path) -> Iterator[tuple[Path, ServerSet, int]]:
    """Serve the three emulators on free loopback ports and run the protocol through them."""
    out = workdir / "hw.h5"
    with start_servers(PROTOCOL, ["keithley2450", "gif", "tem"]) as servers:
        argv = ["run", PROTOCOL, "--hardware", "--out", str(out), "--no-progress", "--no-figures"]
        for role, resource in servers.resources.items():
            argv += ["--resource", f"{role}={resource}"]
        status = main(argv)
        yield out, servers, status


@pytest.fixture(scope="module")
def dry_run(workdir: Path) -> Path:
    out = workdir / "sim.h5"
    assert main(["run", PROTOCOL, "--sim", "--out", str(out), "--no-progress", "--no-figures"]) == 0
    return out


def test_resources_are_tcpip_socket_strings(hardware_run: tuple[Path, ServerSet, int]) -> None:
    _, servers, _ = hardware_run
    assert set(servers.resources) == {"potentiostat", "camera", "microscope"}
    ports = set()
    for res in servers.resources.values():
        head, host, port, tail = res.split("::")
        assert (head, host, tail) == ("TCPIP0", "127.0.0.1", "SOCKET")
        ports.add(int(port))
    assert len(ports) == 3


def test_run_completes_with_the_planned_record(hardware_run: tuple[Path, ServerSet, int]) -> None:
    path, _, status = hardware_run
    assert status == 0
    with RunFileReader(path) as r:
        assert r.status == "completed"
        assert r.n_exposures("li-k") == N_EXPOSURES
        rec = r.exposure_records("li-k")
        np.testing.assert_allclose(rec["exposure_s"], 1.0)
        np.testing.assert_allclose(rec["potential_V"], -0.2)
        # exposures start on the plan's 5 s grid (real time: within the 0.6 s dead time)
        starts = rec["t_start_s"] - rec["t_start_s"][0]
        np.testing.assert_allclose(starts, EVERY_S * np.arange(N_EXPOSURES), atol=0.6)
        ec = r.electrochemistry()
        assert len(ec["t_s"]) >= HOLD_S - 3  # about one reading per second of hold
        np.testing.assert_allclose(ec["voltage_V"], -0.2, atol=1e-6)  # the source read-back of the 2450
        assert not ec["compliance"].any()
        assert np.all(np.abs(ec["current_A"]) < 1e-6)  # below the 1 uA compliance
        ids = r.instruments
        assert ids["potentiostat"].model == "MODEL 2450"
        assert ids["camera"].vendor == "Gatan"
        assert ids["microscope"].model == "TEM emulator"
        assert ids["potentiostat"].resource == hardware_run[1].resources["potentiostat"]


def test_instruments_left_safe(hardware_run: tuple[Path, ServerSet, int]) -> None:
    """Safe state read back from the emulators themselves: output off, beam blanked."""
    _, servers, _ = hardware_run
    assert servers.smu is not None
    assert servers.smu.output_on is False
    assert servers.servers["tem"].microscope.beam.blanked is True
    assert servers.world.applied_V is None  # HIMP output-off: the cell is open circuit


def test_hyperspy_loads_the_hardware_run_as_eels(hardware_run: tuple[Path, ServerSet, int]) -> None:
    import hyperspy.api as hs

    path, _, _ = hardware_run
    s = hs.load(path, file_format="hspy")
    assert s.metadata.Signal.signal_type == "EELS"
    assert s.data.shape == (N_EXPOSURES, 53, 512)
    e = s.axes_manager.signal_axes[0]
    assert e.units == "eV"
    assert e.scale == pytest.approx(0.1)  # 0.1 eV/channel, no binning along energy
    assert e.offset == pytest.approx(35.05)  # centre of the first channel


def test_same_kind_of_file_as_a_dry_run(hardware_run: tuple[Path, ServerSet, int], dry_run: Path) -> None:
    """Same datasets, shapes, dtypes and energy calibration as the simulated run of the protocol."""
    import h5py

    def layout(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
        out: dict[str, tuple[tuple[int, ...], str]] = {}
        with h5py.File(path, "r") as f:
            f.visititems(lambda name, obj: out.__setitem__(name, (obj.shape[1:], str(obj.dtype))) if isinstance(obj, h5py.Dataset) else None)
        return out

    hw, sim = layout(hardware_run[0]), layout(dry_run)
    sim.pop("insitem/ground_truth", None)  # simulated runs carry the ground truth, hardware runs cannot
    sim = {k: v for k, v in sim.items() if not k.startswith("insitem/ground_truth/")}
    assert hw == sim
    with RunFileReader(hardware_run[0]) as h, RunFileReader(dry_run) as d:
        np.testing.assert_allclose(h.energy_axis_eV("li-k"), d.energy_axis_eV("li-k"))
        assert h.n_exposures("li-k") == d.n_exposures("li-k")


def test_camera_sees_the_beam_the_tem_emulator_unblanked(hardware_run: tuple[Path, ServerSet, int], dry_run: Path) -> None:
    """Coupled world through the wires: the GIF emulator's frames carry the electrons the beam
    delivered while the TEM emulator had it unblanked; a 1 s exposure at the same dose gives the
    same mean count as the dry run's (same physics, same dose record; the difference is noise and
    the real-time jitter of the unblank/blank commands around the exposure)."""
    with RunFileReader(hardware_run[0]) as h, RunFileReader(dry_run) as d:
        hw = np.array([h.exposure("li-k", k).mean() for k in range(N_EXPOSURES)])
        sim = np.array([d.exposure("li-k", k).mean() for k in range(N_EXPOSURES)])
        dose_hw = h.exposure_records("li-k")["dose_e_per_m2"]
    assert np.all(sim > 100)  # a bright frame, far above a dark (dark-subtracted ~ 0) one
    np.testing.assert_allclose(hw / sim, 1.0, rtol=0.1)
    assert np.all(dose_hw > 0)
    # the world behind the emulators received the dose the run file records, plus what real time
    # adds around each exposure: the beam is unblanked before the exposure starts and blanked
    # after the frame is read out and transferred (a few tens of ms each on loopback)
    total = hardware_run[1].world.optics.total_dose_e_per_m2()
    assert dose_hw.sum() * 0.99 <= total <= dose_hw.sum() * 1.3


def test_world_cell_followed_real_time_once(hardware_run: tuple[Path, ServerSet, int]) -> None:
    """The SourceMeter and the camera both advance the one cell; every interval is stepped once,
    so the cell's own time equals the clock's (double stepping would make it run ahead)."""
    _, servers, _ = hardware_run
    world = servers.world
    world.advance_to()
    assert world.cell.time_s == pytest.approx(world.clock.now() - _t0(servers), abs=0.5)


def _t0(servers: ServerSet) -> float:
    """Clock time at which the world's cell started (its time_s counts from there)."""
    return servers.t0_s


def test_six_by_one_crossed_the_socket_at_binning_one(hardware_run: tuple[Path, ServerSet, int]) -> None:
    """The emulated DM was asked for binning 1 over the 318 rows of 53 six-row pixels; the driver
    summed the rows into the 53 x 512 frames the run file holds."""
    _, servers, _ = hardware_run
    acquisitions = servers.servers["gif"].acquisitions
    assert len(acquisitions) >= N_EXPOSURES
    for s in acquisitions:
        top, _, bottom, _ = s.area((2048, 2048))
        assert s.binning == (1, 1) and (top, bottom) == (400, 718)


class _Counts(Progress):
    """Progress callbacks that count what the runner reports."""

    def __init__(self) -> None:
        self.steps = 0
        self.exposures = 0

    def step_started(self, step, t_s) -> None:  # noqa: ANN001
        self.steps += 1

    def exposure_done(self, exposure, data, t_s) -> None:  # noqa: ANN001
        self.exposures += 1


def test_the_api_runs_the_hardware_path_with_progress_callbacks(tmp_path: Path) -> None:
    """`insitem.api.run(..., hardware=True)`: the real drivers and the safety supervisor, the rig
    built from resources, progress reported to callbacks; the safe state read from the emulators."""
    import insitem.api as ins

    text = variant(PROTOCOL, ("duration: 15 s", "duration: 4 s"), ("every: 5 s", "every: 2 s"))  # 2 images
    counts = _Counts()
    with start_servers(PROTOCOL, ["keithley2450", "gif", "tem"]) as servers:
        outcome = ins.run(text, tmp_path / "api-hw.h5", hardware=True, resources=servers.resources, progress=counts)
        assert servers.smu is not None and servers.smu.output_on is False
        assert servers.servers["tem"].microscope.beam.blanked is True
    assert (outcome.status, outcome.exposures) == ("completed", 2), outcome.reason
    assert (counts.steps, counts.exposures) == (1, 2)
    with ins.open_run(outcome.path) as run:
        assert run.n_exposures("li-k") == 2
        assert run.instruments["potentiostat"].resource == servers.resources["potentiostat"]
        np.testing.assert_allclose(run.exposure_records("li-k")["potential_V"], -0.2)
    assert outcome.path.with_name(outcome.path.name + ".supervisor.log").is_file()  # the supervisor ran
