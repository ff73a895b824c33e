"""`insitem export`: Battery Data Format CSV checked by batterydf, NeXus NXem checked by pynxtools.

Both validators are third-party code (the Battery Data Alliance's `batterydf`, FAIRmat's
`pynxtools` with the NeXus definitions it ships); the values are compared with the run file
read back through `RunFileReader`.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import h5py
import numpy as np
import pytest

from insitem.cli.main import main
from insitem.acquisition.export import BDF_COLUMNS, export_run
from insitem.acquisition.runfile_read import open_run

bdf = pytest.importorskip("bdf")
pd = pytest.importorskip("pandas")
validation = pytest.importorskip("pynxtools.dataconverter.validation")


@pytest.fixture(scope="module")
def run_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "hold.h5"
    assert main(["run", "loopback-hold", "--sim", "--out", str(out), "--no-progress", "--no-figures"]) == 0
    return out


def test_bdf_csv_passes_batterydf_and_holds_the_record(run_file: Path, tmp_path: Path) -> None:
    out = export_run(run_file, "bdf", tmp_path / "hold.bdf.csv")
    report = bdf.validate(str(out))  # the file-path route: batterydf's own strict BDF loader
    assert report["ok"], report
    assert report["extras"] == [] and report["legacy_labels"] == []
    assert report["time_stats"]["monotonic"]
    df = pd.read_csv(out)
    assert tuple(df.columns) == BDF_COLUMNS
    with open_run(run_file) as r:
        ec = r.electrochemistry()
        origin = r.events()[0].unix_time_s - r.events()[0].t_s
    assert len(df) == ec["t_s"].size > 5
    np.testing.assert_allclose(df["Test Time / s"], ec["t_s"], rtol=0, atol=0)
    np.testing.assert_allclose(df["Voltage / V"], ec["voltage_V"], rtol=0, atol=0)
    np.testing.assert_allclose(df["Current / A"], ec["current_A"], rtol=0, atol=0)
    np.testing.assert_allclose(df["Unix Time / s"], origin + ec["t_s"], rtol=0, atol=1e-6)
    # charge bookkeeping: the running integral of I dt is the trapezoid rule over the record
    q_net_Ah = np.trapezoid(ec["current_A"], ec["t_s"]) / 3600.0
    assert df["Net Capacity / Ah"].iloc[-1] == pytest.approx(q_net_Ah, rel=1e-9, abs=1e-30)
    assert df["Cumulative Capacity / Ah"].iloc[-1] >= abs(df["Net Capacity / Ah"].iloc[-1])
    counts = df["Step Count / 1"].to_numpy()
    assert counts[0] == 1 and np.all(np.diff(counts) >= 0)


def test_step_count_increments_at_each_step_change(tmp_path: Path) -> None:
    from insitem.acquisition.export.bdf import _step_counts

    counts, last, n = _step_counts(np.array([0, 0, 1, 1, 2, 0]), None, 0)
    assert counts.tolist() == [1, 1, 2, 2, 3, 4] and last == 0 and n == 4
    # continued across blocks: the same step carries on, a new one counts
    counts, last, n = _step_counts(np.array([0, 3]), last, n)
    assert counts.tolist() == [4, 5] and n == 5


def test_nexus_file_is_valid_nxem_and_holds_every_exposure(run_file: Path, tmp_path: Path) -> None:
    out = export_run(run_file, "nexus", tmp_path / "hold.nxs", preparation_date="2026-12-01T14:00:00+01:00")
    with h5py.File(out, "r") as f:
        assert validation.validate_hdf_group_against("NXem", f["entry1"], str(out))
        entry = f["entry1"]
        assert entry["definition"][()].decode() == "NXem"
        assert entry["sample1/preparation_date"][()].decode() == "2026-12-01T14:00:00+01:00"
        events = sorted((k for k in entry["measurement"] if k.startswith("event")), key=lambda k: int(k[5:]))
        with open_run(run_file) as r:
            rec = r.exposure_records("li-k")
            assert len(events) == rec["index"].size == 3
            for k, name in enumerate(events):
                ev = entry["measurement"][name]
                start = dt.datetime.fromisoformat(ev["start_time"][()].decode())
                end = dt.datetime.fromisoformat(ev["end_time"][()].decode())
                assert (end - start).total_seconds() == pytest.approx(rec["exposure_s"][k], abs=1e-3)
                assert ev["electrochemistry/potential_V"][()] == rec["potential_V"][k]
                data = ev["spectrum_li_k/spectrum_1d"]
                np.testing.assert_array_equal(data["intensity"][...], r.exposure("li-k", int(rec["index"][k])))
                np.testing.assert_allclose(data["axis_energy"][...], r.energy_axis_eV("li-k"))
                assert data["axis_i"].attrs["units"] == r.window_spec("li-k").position_units
        log = entry["measurement/instrument/sensor_current/value_log"]
        assert log["time"].shape == log["value"].shape and log["value"].attrs["units"] == "A"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--to", "nexus", "--prepared", "yesterday"], "--prepared"),
        (["--to", "nexus", "--prepared", "2026-12-01"], "UTC offset"),
    ],
)
def test_bad_options_give_one_line_and_exit_2(run_file: Path, args: list[str], needle: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(run_file), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err and "Traceback" not in err


def test_a_file_that_is_not_a_run_file_gives_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "notes.h5"
    junk.write_text("not hdf5\n")
    assert main(["export", str(junk), "--to", "bdf"]) == 2
    err = capsys.readouterr().err.strip()
    assert str(junk) in err and "\n" not in err and "Traceback" not in err
    assert not list(tmp_path.glob("*.csv*")), "nothing half-written is left behind"
