"""Speed of the cell electrochemistry + Li transport (targets in docs/performance/cell.md).

Target: one CV cycle of the bulk preset (0.5-2.5-0.5 V at 40 mV/min = 6000 s, 1 mV steps,
dt = 1.5 s, 4000 steps) in <= 0.2 s wall time; 50 cycles in <= 10 s.
Run: .venv/bin/python bench/bench_cell.py [repeats]
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np

from insitem.simulators.electrochemistry import Cell, CellParameters
from insitem.simulators.transport import LiTransport, TransportParameters

V_RATE = 0.040 / 60.0
DT = 1e-3 / V_RATE  # 1.5 s


def wave() -> tuple[np.ndarray, np.ndarray]:
    up = np.linspace(0.5, 2.5, 2001)
    v = np.r_[up, up[::-1][1:]]
    return np.arange(len(v)) * DT, v


def one_cycle_sweep(cell: Cell) -> float:
    t, v = wave()
    t0 = time.perf_counter()
    cell.advance_sweep(t, v, 1e-3)
    return time.perf_counter() - t0


def one_cycle_advance(cell: Cell) -> float:
    _, v = wave()
    t0 = time.perf_counter()
    for x in v[1:]:
        cell.advance(DT, float(x), 1e-3)
    return time.perf_counter() - t0


def transport_steps(n: int = 4000) -> float:
    tr = LiTransport(TransportParameters(D0_m2_per_s=5.2e-20))
    t0 = time.perf_counter()
    for _ in range(n):
        tr.step(1e-7, DT)
    return (time.perf_counter() - t0) / n


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    # a cell that has already formed (cycle 2 onwards is the steady cost; cycle 1 has the formation peak)
    sweep_times, adv_times, first_times = [], [], []
    for _ in range(repeats):
        cell = Cell(CellParameters.lasgtp_bulk())
        first_times.append(one_cycle_sweep(cell))
        sweep_times.append(one_cycle_sweep(cell))
        adv_times.append(one_cycle_advance(cell))
    t_step = statistics.median(transport_steps() for _ in range(3))
    full = []
    for _ in range(max(1, repeats // 3)):
        cell = Cell(CellParameters.lasgtp_bulk())
        t0 = time.perf_counter()
        for _ in range(50):
            one_cycle_sweep(cell)
        full.append(time.perf_counter() - t0)
    med = statistics.median
    print(f"repeats: {repeats} (50-cycle run: {len(full)})")
    print(f"one cycle, advance_sweep, first (formation) cycle: median {med(first_times) * 1e3:.1f} ms")
    print(f"one cycle, advance_sweep, later cycle:             median {med(sweep_times) * 1e3:.1f} ms "
          f"(target 200 ms, ratio {med(sweep_times) / 0.2:.2f})")
    print(f"one cycle, advance() per step:                     median {med(adv_times) * 1e3:.1f} ms "
          f"(advance/advance_sweep = {med(adv_times) / med(sweep_times):.2f})")
    print(f"per step (4000 steps/cycle), advance_sweep:        {med(sweep_times) / 4000 * 1e6:.1f} us")
    print(f"transport step alone (176 nodes, CN, LAPACK pttrs): {t_step * 1e6:.1f} us")
    print(f"50 cycles, advance_sweep:                           median {med(full):.2f} s "
          f"(target 10 s, ratio {med(full) / 10:.2f})")


if __name__ == "__main__":
    main()
