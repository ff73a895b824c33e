"""Whole-protocol dry runs: wall time and peak RSS of `insitem run NAME --sim` (issue 4 targets:
ex-situ-lasgtp, about 83 h of experiment, in <= 10 s; peak RSS <= 300 MB however many exposures).

Each repeat runs in a fresh process (as a user would), without figures, and reports the wall
time of the run command and the child's peak RSS. Usage:

    .venv/bin/python bench/bench_dry_run.py [--repeats 3] [PROTOCOL ...]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import resource, sys, time
t0 = time.perf_counter()
from insitem.acquisition.cli import main
t1 = time.perf_counter()
rc = main(["run", sys.argv[1], "--sim", "--out", sys.argv[2], "--no-progress", "--no-figures"])
t2 = time.perf_counter()
print(f"RESULT {rc} {t1 - t0:.3f} {t2 - t1:.3f} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f}")
"""


def one(protocol: str) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory() as d:
        out = str(Path(d) / "run.h5")
        r = subprocess.run([sys.executable, "-c", CHILD, protocol, out], capture_output=True, text=True, timeout=900)
        line = next(x for x in r.stdout.splitlines() if x.startswith("RESULT"))
        _, rc, t_import, t_run, rss = line.split()
        if rc != "0":
            raise SystemExit(f"{protocol}: run failed: {r.stderr[-500:]}")
        return float(t_import), float(t_run), float(rss)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("protocols", nargs="*", default=["ex-situ-lasgtp", "in-situ-lasgtp", "si-nanoparticle-hold"])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(f"{'protocol':24} {'run s (median)':>15} {'min':>7} {'import s':>9} {'peak RSS MB':>12}")
    for p in args.protocols:
        rows = [one(p) for _ in range(args.repeats)]
        runs = [r[1] for r in rows]
        print(f"{p:24} {statistics.median(runs):15.2f} {min(runs):7.2f} {statistics.median(r[0] for r in rows):9.2f} {max(r[2] for r in rows):12.0f}")
    print(f"load average: {open('/proc/loadavg').read().split()[:3]}")


if __name__ == "__main__":
    main()
