"""The wheel carries every subpackage and the protocol library, under the `insitem` namespace only."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = ["drivers", "simulators", "acquisition", "protocols", "analysis", "api", "cli"]


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The wheel, and everything the build printed (pip -v passes the backend's output on)."""
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-v", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    (whl,) = out.glob("insitem-*.whl")
    return whl, r.stdout + r.stderr


@pytest.fixture(scope="module")
def wheel(build: tuple[Path, str]) -> Path:
    return build[0]


def test_the_build_declares_every_package(build: tuple[Path, str]) -> None:
    """setuptools warns about importable folders missing from `packages` (the protocol library was)."""
    log = build[1]
    assert "absent from the `packages` configuration" not in log, log[-3000:]
    assert "Package would be ignored" not in log


def test_wheel_contents(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"insitem"}, f"nothing but insitem/ may land in site-packages, got {tops}"
    for sub in SUBPACKAGES:
        assert f"insitem/{sub}/__init__.py" in names
    for proto in (ROOT / "protocols" / "library").glob("*.yaml"):
        assert f"insitem/protocols/library/{proto.name}" in names
    assert "insitem/protocols/protocol.schema.json" in names  # the JSON Schema editors use
    # every source package folder of the repository is in the wheel
    for sub in SUBPACKAGES:
        for init in (ROOT / sub).rglob("__init__.py"):
            rel = init.relative_to(ROOT).as_posix()
            assert f"insitem/{rel}" in names, rel


def test_wheel_installs_and_runs_in_an_empty_venv(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True, timeout=300)
    # dependencies come from the test environment's site-packages, put on PYTHONPATH (a .pth
    # there, such as the editable install's finder, is not processed from PYTHONPATH)
    deps = sysconfig.get_paths()["purelib"]
    env = {"PYTHONPATH": deps, "PATH": str(env_dir / "bin")}
    code = "import insitem, " + ", ".join(f"insitem.{s}" for s in SUBPACKAGES) + "; print(insitem.drivers.__file__)"
    r = subprocess.run([str(py), "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert str(env_dir) in r.stdout, "imported from the wheel, not the checkout"
    r = subprocess.run([str(env_dir / "bin" / "insitem"), "list"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "ex-situ-lasgtp" in r.stdout
