"""Live Li-K profile cost per 330 x 2048 image (target: a few ms), against the full Fig. 6 summarize.

Run: .venv/bin/python bench/bench_live_analysis.py
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from insitem.acquisition.live_analysis import LiveLiProfile
from insitem.analysis import EnergyAxis, PositionAxis, summarize
from insitem.protocols.loader import load


def median_s(f, repeats: int = 15) -> float:
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main() -> None:
    rng = np.random.default_rng(0)
    lp = LiveLiProfile.from_protocol(load("ex-situ-lasgtp"))
    low_E = lp.energy_axis("li-k", 2048)
    core_E = lp.energy_axis("ti-l-o-k", 2048)
    E = low_E.values_eV
    low = rng.poisson(1e9 * E[None, :] ** -3.0 + 50.0 * (E[None, :] >= 55) * np.ones((330, 1))).astype(np.float32)
    Ec = core_E.values_eV
    core = rng.poisson(1e10 * Ec[None, :] ** -3.0 * np.ones((330, 1)) + 100 * (Ec[None, :] >= 456)).astype(np.float32)
    t_live = median_s(lambda: lp("li-k", low))
    pos = PositionAxis(offset_m=2.35e-9, scale_m=5.7e-9, size=330)
    with np.errstate(all="ignore"):
        t_sum = median_s(lambda: summarize(low, low_E, core, core_E, pos), 5)
    print(f"live Li profile, 330 x 2048 float32: median {t_live * 1e3:.2f} ms")
    print(f"full summarize (Li, Ti, O), same size: median {t_sum * 1e3:.1f} ms")
    print(f"ratio summarize / live: {t_sum / t_live:.1f}")


if __name__ == "__main__":
    main()
