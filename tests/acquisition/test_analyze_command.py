"""`insitem analyze`: outputs of a dry-run file, one-line exit-2 errors, the live Li profile callable."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from insitem.cli.main import main
from insitem.acquisition.live_analysis import LiveLiProfile
from insitem.protocols.loader import load

LIBRARY = Path(__file__).resolve().parents[2] / "protocols" / "library" / "ex-situ-lasgtp.yaml"


@pytest.fixture(scope="module")
def short_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dry run of the ex-situ protocol without its 83 h of cycling: one rest with both exposures."""
    d = tmp_path_factory.mktemp("short")
    text = LIBRARY.read_text().split("\nsteps:")[0].replace("name: ex-situ-lasgtp", "name: short-lasgtp")
    text += "\nsteps:\n  - rest:\n      duration: 60 s\n      exposures:\n        - windows: [li-k, ti-l-o-k]\n          at_start: true\n"
    proto = d / "short.yaml"
    proto.write_text(text)
    assert main(["run", str(proto), "--out", str(d), "--no-progress", "--no-figures"]) == 0
    (run,) = d.glob("*.h5")
    return run


def test_analyze_writes_summary_and_fig6_figures(short_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "res"
    assert main(["analyze", str(short_run), "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["li_window"] == "li-k" and s["core_window"] == "ti-l-o-k"
    n = len(s["distance_m"])
    assert n == 330 and len(s["li_c_rel"]) == n and len(s["oo_distance_m"]) == n
    # the Pt interface is 400 nm from the slit's first edge in the simulated world (slit_start_y_m)
    assert s["interface_m"] == pytest.approx(400e-9, abs=2 * 5.7e-9)
    assert "series" not in s  # one exposure per window
    for name in ("fig6-li-profile.png", "fig6-oo-distance.png", "fig6-spectra.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_file_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", str(tmp_path / "nope.h5")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no such run file" in err and "Traceback" not in err


def test_not_a_run_file_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "x.h5"
    bad.write_text("not hdf5")
    assert main(["analyze", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "not an HDF5 run file (a text file" in err and "Traceback" not in err and len(err.splitlines()) == 1
    import h5py

    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["x"] = 1
    assert main(["analyze", str(tmp_path / "plain.h5")]) == 2
    assert "not an insitem run file" in capsys.readouterr().err


def test_run_file_without_exposures_is_exit_2(short_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Same file with the exposure table emptied: the reader counts 0 exposures per window."""
    import shutil

    import h5py

    copy = tmp_path / "empty.h5"
    shutil.copy(short_run, copy)
    with h5py.File(copy, "a") as f:
        f["insitem/exposures"].resize((0,))
    assert main(["analyze", str(copy)]) == 2
    assert "no exposures" in capsys.readouterr().err


def test_live_profile_only_for_li_window_and_normalised_to_far_quarter() -> None:
    """Synthetic Li-K image: power law E^-3 plus a Li-K step at 55 eV whose height is c/c0 per row."""
    lp = LiveLiProfile.from_protocol(load("ex-situ-lasgtp"))
    E = lp.energy_axis("li-k", 2048).values_eV
    c = np.ones(330)
    c[:60] = np.linspace(8.0, 1.0, 60)
    img = 1e9 * E[None, :] ** -3.0 + 50.0 * c[:, None] * (E[None, :] >= 55.0) * (E[None, :] / 55.0) ** -2.0
    prof = lp("li-k", img)
    assert prof is not None and prof.shape == (330,)
    np.testing.assert_allclose(prof, c, rtol=1e-3)  # exact power law: recovered exactly
    assert lp("ti-l-o-k", img) is None  # core window holds no Li-K
    assert lp("low-loss", img) is None  # holds the zero-loss peak: kept for deconvolution, not a Li-K window
    assert lp("unknown", img) is None


def test_sim_rig_bundle_carries_the_live_profile() -> None:
    from insitem.acquisition.rig import build_rig
    from insitem.drivers.clock import VirtualClock

    bundle = build_rig(load("ex-situ-lasgtp"), VirtualClock(), hardware=False)
    try:
        assert isinstance(bundle.live_profile, LiveLiProfile)
    finally:
        bundle.close()
