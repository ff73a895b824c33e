"""Synthesis time of one 330 x 2048 SR-EELS image (core window 420 eV and Li-K window 35 eV), and the
cache build of the three windows of the ex-situ-lasgtp protocol.

Run: .venv/bin/python bench/bench_eels.py [--builds 5]
  1. per window: first call (= cache build on a fresh synthesizer), then the median of cached calls;
  2. cache build as in a protocol run: one synthesizer, first calls on the low-loss (-10 eV, 1024
     channels), Li-K (35 eV) and core-loss (420 eV) windows in that order, repeated ``--builds``
     times with a fresh synthesizer; prints the median per window and of the total.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

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


def run_builds(builds: int) -> None:
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15, help="cached calls per window")
    ap.add_argument("--builds", type=int, default=5, help="repeats of the three-window cache build")
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}")
    cached_calls(args.repeats)
    run_builds(args.builds)
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
