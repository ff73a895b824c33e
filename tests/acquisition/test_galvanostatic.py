"""Galvanostatic cycling and ocv rests on the simulated LASGTP cell (issue 16.3).

The protocol (galvanostatic-lasgtp.yaml beside this file) rests at open circuit, cycles the pristine
cell twice at -1 uA between 1.0 and 2.2 V (each cycle starts with the discharge), and rests again.
The voltages come from the cell physics (simulators/electrochemistry.py), not from the protocol:
the plateau of a Langmuir-isotherm negative electrode sits at U_pos - E0_neg.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from insitem import api
from insitem.simulators.electrochemistry import CellParameters

PROTOCOL = Path(__file__).parent / "galvanostatic-lasgtp.yaml"
CURRENT_A = 1e-6
LOWER_V, UPPER_V = 1.0, 2.2
READING_S = 2.0  # the galvanostatic step's reading_interval


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    outcome = api.dry_run(PROTOCOL, tmp_path_factory.mktemp("galvanostatic") / "run.h5")
    assert outcome.status == "completed", outcome.reason
    with h5py.File(outcome.path, "r") as f:
        ec = f["insitem/electrochemistry"][:]
        exposures = f["insitem/exposures"][:]
    return {"path": outcome.path, "ec": ec, "exposures": exposures}


def half_cycles(ec: np.ndarray) -> list[tuple[float, np.ndarray]]:
    """(sourced current, readings) of each constant-current half-cycle of the galvanostatic step;
    each block starts with the reading taken just before the current was switched to it."""
    e = ec[ec["step"] == 1]
    level = np.where(np.abs(e["current_A"]) > 0.5 * CURRENT_A, np.sign(e["current_A"]) * CURRENT_A, 0.0)
    starts = np.flatnonzero(np.diff(level) != 0) + 1
    out = []
    for a, b in zip(starts, [*starts[1:], len(e)]):
        if level[a] != 0.0:
            out.append((float(level[a]), e[a - 1 : b]))
    return out


def test_each_cycle_charges_to_the_upper_and_discharges_to_the_lower_limit(run: dict[str, Any]) -> None:
    legs = half_cycles(run["ec"])
    # the pristine cell (0.5 V, empty) is below the lower limit: cycle 1's discharge is skipped
    assert [np.sign(i) for i, _ in legs] == [1, -1, 1]
    assert [int(r["cycle"][-1]) for _, r in legs] == [1, 2, 2]
    for i, r in legs:
        v = r["voltage_V"][1:]
        if i > 0:
            assert v[-1] >= UPPER_V - 1e-9 and np.all(v[:-1] < UPPER_V)
        else:
            assert v[-1] <= LOWER_V and np.all(v[:-1] > LOWER_V)


def test_the_voltage_plateau_comes_from_the_cell_near_1_6_V(run: dict[str, Any]) -> None:
    p = CellParameters.lasgtp_bulk()
    plateau_V = p.U_pos_V - p.E0_neg_V  # 3.93 - 2.35 = 1.58 V: theta = 1/2 of the Langmuir isotherm
    for i, r in half_cycles(run["ec"]):
        t, v = r["t_s"][1:], r["voltage_V"][1:]
        middle = (t >= t[0] + 0.25 * (t[-1] - t[0])) & (t <= t[0] + 0.75 * (t[-1] - t[0]))
        # half the half-cycle's charge passes within 0.1 V: a plateau, in a 1.2 V window
        assert np.ptp(v[middle]) < 0.1, (i, np.ptp(v[middle]))
        # charge above, discharge below the equilibrium by the overpotential of 1 uA (R_ct 20 kOhm)
        assert abs(np.median(v[middle]) - plateau_V) < 0.05
        assert 1.5 < np.median(v[middle]) < 1.7
        assert (np.median(v[middle]) - plateau_V) * i > 0


def test_the_charge_of_each_half_cycle_is_current_times_time(run: dict[str, Any]) -> None:
    """Q = sum of I dt over the readings (each reading's current for the interval it ends) equals
    I (t_end - t_start). Tolerance: within a half-cycle the source holds I exactly, but in the
    interval in which a charge reaches the SourceMeter's voltage limit the cell takes less, so
    up to one interval's charge (I x 2 s) may be missing; the SMU noise (100 pA rms on the 1 uA
    range, physics.md 4.4) adds < 1e-9 C. Measured: 0.16, 0.001 and 0.38 uC short of I t over the
    1390, 164 and 550 s half-cycles (< 0.07 %)."""
    for i, r in half_cycles(run["ec"]):
        t, cur = r["t_s"], r["current_A"]
        q = float(np.sum(cur[1:] * np.diff(t)))
        it = i * (t[-1] - t[0])
        assert t[-1] - t[0] > 100
        assert abs(q - it) <= abs(i) * READING_S + 1e-9, (i, q, it)
        assert abs(q - it) / abs(it) < 0.01
        # while the voltage is inside the limits the measured current is the sourced one
        inside = ~r["compliance"][1:].astype(bool)
        assert np.allclose(cur[1:][inside], i, rtol=1e-3, atol=1e-9)


def test_the_ocv_rests_record_the_voltage_and_the_charged_cell_relaxes(run: dict[str, Any]) -> None:
    ec = run["ec"]
    first, last = ec[ec["step"] == 0], ec[ec["step"] == 2]
    assert len(first) >= 12 and len(last) >= 120  # a reading every 5 s
    for rest in (first, last):
        assert np.all(np.isfinite(rest["voltage_V"])) and np.all(np.abs(rest["current_A"]) < 1e-9)  # 0 A sourced
    # the pristine cell rests at its initial open-circuit voltage (0.5 V, the preset's)
    assert first["voltage_V"] == pytest.approx(0.5, abs=0.01)
    # after the charge to 2.2 V the voltage falls back towards the plateau, ever more slowly
    t, v = last["t_s"], last["voltage_V"]
    assert v[0] < UPPER_V and v[-1] < v[0] - 0.2 and v[-1] > 1.0
    early = (v[0] - v[t <= t[0] + 60][-1]) / 60.0
    late = (v[t >= t[-1] - 60][0] - v[-1]) / 60.0
    assert early > 0 and late >= 0 and early > 5 * late, (early, late)


def test_exposures_carry_the_voltage_and_current_they_were_taken_at(run: dict[str, Any]) -> None:
    x = run["exposures"]
    assert len(x) >= 5
    assert np.all(np.isfinite(x["potential_V"])) and np.all(np.isfinite(x["current_A"]))
    galv = x[x["step"] == 1]
    assert np.all((galv["potential_V"] > 0.9) & (galv["potential_V"] < UPPER_V + 1e-9))
    assert x["step"][-1] == 2 and abs(x["current_A"][-1]) < 1e-9  # the ocv's at_end image: open circuit


def test_bdf_export_counts_the_galvanostatic_cycles(run: dict[str, Any], tmp_path: Path) -> None:
    path = api.export(run["path"], "bdf", tmp_path / "run.bdf.csv")
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    galv = [r for r in rows if int(float(r["Step Index / 1"])) == 1]
    assert {int(float(r["Cycle Count / 1"])) for r in galv} == {1, 2}
    assert {int(float(r["Cycle Count / 1"])) for r in rows if int(float(r["Step Index / 1"])) != 1} == {0}
    assert len({r["Step Count / 1"] for r in rows}) == 3  # ocv, galvanostatic, ocv


@pytest.mark.wire
def test_galvanostatic_and_ocv_through_the_drivers_and_emulators(tmp_path: Path) -> None:
    """The real Keithley 2450 driver sources the current through the emulator's :SOUR:FUNC CURR
    with the voltage limit (:SOUR:CURR:VLIM), and leaves the output off; real time, ~8 s."""
    from insitem.cli.main import main
    from insitem.simulators.serve import start_servers

    protocol = Path(__file__).parent / "galvanostatic-loopback.yaml"
    out = tmp_path / "hw.h5"
    with start_servers(str(protocol), ["keithley2450", "gif", "tem"]) as servers:
        argv = ["run", str(protocol), "--hardware", "--out", str(out), "--no-progress", "--no-figures"]
        for role, resource in servers.resources.items():
            argv += ["--resource", f"{role}={resource}"]
        assert main(argv) == 0
        smu = servers.smu
        assert smu is not None and smu.output_on is False  # read from the emulator, not the runner
    with h5py.File(out, "r") as f:
        ec = f["insitem/electrochemistry"][:]
        assert f["Experiments/li-k/data"].shape[0] == 1
    galv = ec[ec["step"] == 1]
    charge, discharge = galv[galv["current_A"] > 1e-6], galv[galv["current_A"] < -1e-6]
    # 2 uA both ways for ~3 s each (max_time: the limits are not reached), read every 0.25 s
    assert len(charge) >= 8 and len(discharge) >= 8
    assert np.allclose(charge["current_A"], 2e-6, rtol=1e-2) and np.allclose(discharge["current_A"], -2e-6, rtol=1e-2)
    assert charge["voltage_V"][-1] > charge["voltage_V"][0] and discharge["voltage_V"][-1] < discharge["voltage_V"][0]
    assert set(galv["cycle"]) == {1}
    for step, n in ((0, 9), (2, 2)):  # at the start, then every 0.25 s / once after 3 s
        rest = ec[ec["step"] == step]
        assert len(rest) == n and np.all(np.isfinite(rest["voltage_V"])) and np.all(np.abs(rest["current_A"]) < 1e-8)
