"""Synthesis time of one 330 x 2048 SR-EELS image (core window 420 eV and Li-K window 35 eV).

Run: .venv/bin/python bench/bench_eels.py   (prints first call = cache build, then the median of cached calls)
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from insitem.simulators.eels import EELSSynthesizer
from insitem.simulators.sample import Sample


def main(repeats: int = 15) -> None:
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


if __name__ == "__main__":
    main()
