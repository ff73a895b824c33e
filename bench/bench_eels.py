"""Synthesis time of one 330 x 2048 SR-EELS image (core window 420 eV and Li-K window 35 eV), and the
cache build of the three windows of the ex-situ-lasgtp protocol.

Run: .venv/bin/python bench/bench_eels.py [--builds 5] [--old REV --rounds 6]
  1. per window: first call (= cache build on a fresh synthesizer), then the median of cached calls;
  2. cache build as in a protocol run: one synthesizer, first calls on the low-loss (-10 eV, 1024
     channels), Li-K (35 eV) and core-loss (420 eV) windows in that order, repeated ``--builds``
     times with a fresh synthesizer; prints the median per window and of the total.
  With ``--old REV`` only (2) runs, in fresh processes alternating between simulators/eels.py and
  simulators/cross_sections.py of git revision REV and the working tree's (``--rounds`` each, so
  both see the same machine load), and prints both medians and the ratio old/new.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from insitem.simulators.eels import EELSSynthesizer
from insitem.simulators.sample import Sample

#: (name, first channel centre eV, channels) of the ex-situ-lasgtp windows, 0.1 eV per channel
RUN_WINDOWS = (("low-loss -10 eV", -9.95, 1024), ("Li-K 35 eV", 35.05, 2048), ("core-loss 420 eV", 420.05, 2048))


def cached_calls(repeats: int) -> None:
    sample = Sample()
    y = sample.pixel_positions_m(330)
    li = sample.reference_li_ratio(y)
    col = sample.column_state(y, li)
    rng = np.random.default_rng(0)
    for name, offset in (("core-loss 420 eV", 420.0), ("Li-K 35 eV", 35.0)):
        E = offset + 0.1 * (np.arange(2048) + 0.5)
        syn = EELSSynthesizer()
        t = time.perf_counter()
        syn.synthesize(E, col, 3.4e7)
        first = time.perf_counter() - t
        times = []
        for _ in range(repeats):
            col = sample.column_state(y, li * (1 + 0.01 * rng.random()))  # Li changes between exposures
            drift = np.linspace(0.0, 0.05, 16) + 0.01 * rng.standard_normal(16)
            t = time.perf_counter()
            syn.synthesize(E, col, 3.4e7, energy_shift_eV=drift)
            times.append(time.perf_counter() - t)
        med = statistics.median(times)
        print(f"{name}: first call {first * 1e3:.0f} ms, cached median {med * 1e3:.1f} ms "
              f"(min {min(times) * 1e3:.1f}, n={repeats}), first/cached = {first / med:.1f}")


def run_builds(builds: int) -> float:
    """Prints the medians of (2); returns the median total, s."""
    sample = Sample()
    y = sample.pixel_positions_m(330)
    col = sample.column_state(y, sample.reference_li_ratio(y))
    per = {name: [] for name, _, _ in RUN_WINDOWS}
    totals = []
    for _ in range(builds):
        syn = EELSSynthesizer()
        total = 0.0
        for name, first, n in RUN_WINDOWS:
            E = first + 0.1 * np.arange(n)
            t = time.perf_counter()
            syn.synthesize(E, col, 3.4e7)
            dt = time.perf_counter() - t
            per[name].append(dt)
            total += dt
        totals.append(total)
    print(f"cache build, ex-situ-lasgtp windows on one synthesizer (median of {builds}):")
    for name, ts in per.items():
        print(f"  {name}: {statistics.median(ts) * 1e3:.0f} ms (min {min(ts) * 1e3:.0f})")
    print(f"  total: {statistics.median(totals) * 1e3:.0f} ms (min {min(totals) * 1e3:.0f})")
    return statistics.median(totals)


# loads the old modules (files in argv[1], if given) in place of the installed ones, then times (2)
CHILD = """
import importlib.util, sys
if sys.argv[1]:
    for name in ("cross_sections", "eels"):
        full = "insitem.simulators." + name
        spec = importlib.util.spec_from_file_location(full, sys.argv[1] + "/" + name + ".py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[full] = mod
        spec.loader.exec_module(mod)
sys.path.insert(0, sys.argv[2])
import bench_eels
print("TOTAL", bench_eels.run_builds(int(sys.argv[3])))
"""


def compare(rev: str, rounds: int, builds: int) -> None:
    repo = Path(__file__).resolve().parent.parent
    bench_dir = str(Path(__file__).resolve().parent)
    times: dict[str, list[float]] = {"old": [], "new": []}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("cross_sections", "eels"):
            src = subprocess.run(["git", "show", f"{rev}:simulators/{name}.py"], cwd=repo, check=True,
                                 capture_output=True, text=True).stdout
            Path(tmp, f"{name}.py").write_text(src)
        for _ in range(rounds):
            for label, path in (("old", tmp), ("new", "")):
                out = subprocess.run([sys.executable, "-c", CHILD, path, bench_dir, str(builds)],
                                     check=True, capture_output=True, text=True).stdout
                times[label].append(float(out.split("TOTAL")[-1]))
    old, new = statistics.median(times["old"]), statistics.median(times["new"])
    print(f"three-window cache build, medians of {rounds} processes x median of {builds} builds:")
    print(f"  {rev}: {old * 1e3:.0f} ms   working tree: {new * 1e3:.0f} ms   old/new = {old / new:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15, help="cached calls per window")
    ap.add_argument("--builds", type=int, default=5, help="repeats of the three-window cache build")
    ap.add_argument("--old", metavar="REV", help="compare the cache build with git revision REV")
    ap.add_argument("--rounds", type=int, default=6, help="processes per version with --old")
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}")
    if args.old:
        compare(args.old, args.rounds, args.builds)
    else:
        cached_calls(args.repeats)
        run_builds(args.builds)
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
