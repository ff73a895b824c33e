"""Speed of the cell electrochemistry + Li transport (targets in docs/performance/cell.md).

Target: one CV cycle of the bulk preset (0.5-2.5-0.5 V at 40 mV/min = 6000 s, 1 mV steps,
dt = 1.5 s, 4000 steps) in <= 0.2 s; 50 cycles in <= 10 s. Times are CPU time of the process
(`time.process_time`): the cell runs on one thread, so on an idle machine they equal the wall
time, and on the shared machine they vary far less with the other work on it.
Run: .venv/bin/python bench/bench_cell.py [repeats]

`--old REV [--rounds N]` alternates N runs (fresh processes, old, new, old, ...) of this benchmark
with simulators/electrochemistry.py of git revision REV (loaded from a file in place of the
working tree's) and with the working tree's, and prints both medians and the ratio new/old.
`--module FILE` runs the benchmark with the Cell of that file (what `--old` does in its children).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from insitem.simulators.transport import LiTransport, TransportParameters

V_RATE = 0.040 / 60.0
DT = 1e-3 / V_RATE  # 1.5 s


def wave() -> tuple[np.ndarray, np.ndarray]:
    up = np.linspace(0.5, 2.5, 2001)
    v = np.r_[up, up[::-1][1:]]
    return np.arange(len(v)) * DT, v


def one_cycle_sweep(cell: Any) -> float:
    t, v = wave()
    t0 = time.process_time()
    cell.advance_sweep(t, v, 1e-3)
    return time.process_time() - t0


def one_cycle_advance(cell: Any) -> float:
    _, v = wave()
    t0 = time.process_time()
    for x in v[1:]:
        cell.advance(DT, float(x), 1e-3)
    return time.process_time() - t0


def transport_steps(n: int = 4000) -> float:
    tr = LiTransport(TransportParameters(D0_m2_per_s=5.2e-20))
    t0 = time.process_time()
    for _ in range(n):
        tr.step(1e-7, DT)
    return (time.process_time() - t0) / n


def newton_iterations_per_step(mod: ModuleType) -> float:
    """Mean Newton iterations per stair over cycle 2 (a copy of the module whose Newton loop counts)."""
    src = Path(mod.__file__ or "").read_text(encoding="utf-8")
    src, n = re.subn(r"(\n(\s+)for \w+ in range\(200\):\n)(\s+# positive interface)",
                     r"\1\2    _NEWTON_COUNT[0] += 1\n\3", src)
    if n < 1:
        return float("nan")
    counted = ModuleType(mod.__name__ + "_counted")
    counted.__dict__["_NEWTON_COUNT"] = count = [0]
    sys.modules[counted.__name__] = counted
    exec(compile(src, str(mod.__file__), "exec"), counted.__dict__)
    cell = counted.Cell(counted.CellParameters.lasgtp_bulk())
    one_cycle_sweep(cell)
    count[0] = 0
    one_cycle_sweep(cell)
    return count[0] / (len(wave()[1]) - 1)


def load_module(path: str | None, name: str = "insitem.simulators.electrochemistry") -> ModuleType:
    """Module `name` as installed, or (`path`) an old tree's copy of its file loaded in its place."""
    if path is None:
        return importlib.import_module(name)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def bench(repeats: int, module_file: str | None = None) -> None:
    mod = load_module(module_file)
    Cell, CellParameters = mod.Cell, mod.CellParameters
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
        t0 = time.process_time()
        for _ in range(50):
            one_cycle_sweep(cell)
        full.append(time.process_time() - t0)
    med = statistics.median
    print(f"module: {mod.__file__}")
    print(f"repeats: {repeats} (50-cycle run: {len(full)})")
    print(f"one cycle, advance_sweep, first (formation) cycle: median {med(first_times) * 1e3:.1f} ms")
    print(f"one cycle, advance_sweep, later cycle:             median {med(sweep_times) * 1e3:.1f} ms "
          f"(target 200 ms, ratio {med(sweep_times) / 0.2:.2f})")
    print(f"one cycle, advance() per step:                     median {med(adv_times) * 1e3:.1f} ms "
          f"(advance/advance_sweep = {med(adv_times) / med(sweep_times):.2f})")
    print(f"per step (4000 steps/cycle), advance_sweep:        {med(sweep_times) / 4000 * 1e6:.1f} us")
    print(f"Newton iterations per step, advance_sweep, cycle 2: {newton_iterations_per_step(mod):.2f}")
    print(f"transport step alone (176 nodes, CN, LAPACK pttrs): {t_step * 1e6:.1f} us")
    print(f"50 cycles, advance_sweep:                           median {med(full):.2f} s "
          f"(target 10 s, ratio {med(full) / 10:.2f})")


PATTERNS = {
    "first cycle, ms": r"first \(formation\) cycle: median ([\d.]+) ms",
    "later cycle, ms": r"later cycle:\s+median ([\d.]+) ms",
    "advance() cycle, ms": r"advance\(\) per step:\s+median ([\d.]+) ms",
    "per step, us": r"per step \(4000 steps/cycle\), advance_sweep:\s+([\d.]+) us",
    "Newton iterations/step": r"Newton iterations per step, advance_sweep, cycle 2: ([\d.]+)",
    "50 cycles, s": r"50 cycles, advance_sweep:\s+median ([\d.]+) s",
}


def compare(rev: str, rounds: int, repeats: int) -> None:
    root = Path(__file__).resolve().parents[1]
    src = subprocess.run(["git", "show", f"{rev}:simulators/electrochemistry.py"], cwd=root,
                         capture_output=True, text=True, check=True).stdout
    results: dict[str, dict[str, list[float]]] = {w: {k: [] for k in PATTERNS} for w in ("old", "new")}
    with tempfile.TemporaryDirectory() as d:
        old_file = Path(d) / "electrochemistry_old.py"
        old_file.write_text(src, encoding="utf-8")
        for _ in range(rounds):
            for which in ("old", "new"):
                extra = ["--module", str(old_file)] if which == "old" else []
                out = subprocess.run([sys.executable, __file__, str(repeats), *extra], capture_output=True,
                                     text=True, check=True).stdout
                for key, pat in PATTERNS.items():
                    results[which][key].append(float(re.search(pat, out).group(1)))  # type: ignore[union-attr]
    med = statistics.median
    print(f"{'':26} {'old':>9} {'new':>9} {'new/old':>8}   (medians of {rounds} alternating runs of "
          f"{repeats} repeats; old = {rev})")
    for key in PATTERNS:
        o, n = med(results["old"][key]), med(results["new"][key])
        print(f"{key:26} {o:9.2f} {n:9.2f} {n / o:8.3f}")
    print(f"load average: {open('/proc/loadavg').read().split()[:3]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("repeats", nargs="?", type=int, default=7)
    ap.add_argument("--module", metavar="FILE", help="benchmark the Cell of this electrochemistry.py")
    ap.add_argument("--old", metavar="REV", help="alternate with simulators/electrochemistry.py of git revision REV")
    ap.add_argument("--rounds", type=int, default=3, help="with --old: runs of each (default 3)")
    args = ap.parse_args()
    if args.old:
        compare(args.old, args.rounds, args.repeats)
    else:
        bench(args.repeats, args.module)


if __name__ == "__main__":
    main()
