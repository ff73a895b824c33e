"""The `insitem` command: exit codes and one-line errors, run as a user would (a subprocess)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

INSITEM = [sys.executable, "-m", "insitem.cli"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*INSITEM, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_list_shows_the_library() -> None:
    r = run("list")
    assert r.returncode == 0
    for name in ("ex-situ-lasgtp", "in-situ-lasgtp", "micro-battery-lagp", "si-nanoparticle-hold"):
        assert name in r.stdout


def test_validate_accepts_the_library() -> None:
    r = run("validate", "ex-situ-lasgtp", "in-situ-lasgtp", "micro-battery-lagp", "si-nanoparticle-hold")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("ok:") == 4


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("name: x\nsteps: [\n", "invalid YAML"),
        ("- just a list\n", "expected a mapping"),
    ],
)
def test_validate_rejects_bad_files_in_one_line(tmp_path: Path, content: str, fragment: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(content)
    r = run("validate", str(f))
    assert r.returncode == 2
    assert fragment in r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert len(r.stderr.strip().splitlines()) == 1


def test_missing_file_and_unknown_command() -> None:
    r = run("validate", "/no/such/protocol.yaml")
    assert r.returncode == 2 and "no such file" in r.stderr and "Traceback" not in r.stderr
    r = run("frobnicate")
    assert r.returncode == 2 and "invalid choice" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_plan_prints_duration_and_dose() -> None:
    r = run("plan", "ex-situ-lasgtp", "--json")
    assert r.returncode == 0, r.stderr
    import json

    s = json.loads(r.stdout)
    assert s["duration_s"] == pytest.approx(300120.0)
    assert s["dose_e_per_A2"] == pytest.approx(610.92, abs=0.01)  # 61.5 s at 9.934 e/Å²/s
    assert s["exposures"] == {"low-loss": 1, "li-k": 1, "ti-l-o-k": 1}


@pytest.mark.parametrize("command", ["list", "validate", "plan", "run", "show", "analyze", "serve", "bridge"])
def test_every_command_has_help(command: str) -> None:
    r = run(command, "--help")
    assert r.returncode == 0 and "usage:" in r.stdout
