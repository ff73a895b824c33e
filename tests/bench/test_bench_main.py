"""`python -m bench`: the list, running one bench with its own arguments, an unknown name."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=REPO, capture_output=True, text=True, timeout=60)


def test_lists_every_bench_file() -> None:
    out = _bench()
    assert out.returncode == 0
    listed = {line.split()[0] for line in out.stdout.splitlines()[1:]}
    files = {p.stem.removeprefix("bench_") for p in (REPO / "bench").glob("*.py") if not p.name.startswith("_")}
    assert listed == files


def test_runs_the_named_file_as_a_script_with_its_arguments() -> None:
    out = _bench("realtime", "--help")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: bench_realtime.py")
    assert "--serve-nice" in out.stdout


def test_unknown_name_is_one_line_and_exit_2() -> None:
    out = _bench("no-such-bench")
    assert out.returncode == 2
    assert out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1
    assert "'no-such-bench'" in out.stderr and "realtime" in out.stderr
