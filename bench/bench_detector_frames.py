"""CPU time of the detector per read-out of a new binned low-loss image, as in the in-situ dry run.

Every read-out of an in-situ run brings a new expected image (the sample evolves), so the detector
makes the image's PSF mean, its lattice and its noise anew each time: 717 such frames in
in-situ-lasgtp. This bench exposes a 330-position x 1024-channel low-loss image (6 CCD rows per
position, readout area 1980 x 1024, binning 6 x 1, 0.05 s; zero loss, plasmon and tail at the dose
of that run: median 12 e per readout pixel, a fifth of them below 4 e and 70 % below 24 e) scaled by a different
factor each frame, and reports the median CPU time per frame (`time.process_time`, one thread).

    .venv/bin/python bench/bench_detector_frames.py [--frames 20] [--repeats 3]
    .venv/bin/python bench/bench_detector_frames.py --old REV --rounds 3   # alternate with REV's detector.py

`--old REV` runs this bench in fresh processes, alternating the detector module of git revision
REV (loaded from a file in place of the working tree's) with the working tree's, and prints both
medians and the ratio new/old.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import numpy as np

from bench_cell import load_module  # bench/ is first on sys.path (run as a script or by `python -m bench`)


def load_detector(path: str | None) -> ModuleType:
    return load_module(path, "insitem.simulators.detector")


def low_loss_rows(n_pos: int = 330, n_ch: int = 1024) -> np.ndarray:
    """Expected electrons per unbinned pixel (float32, one row per position) of a low-loss window."""
    x = np.arange(n_ch, dtype=np.float64)
    spec = 60.0 * np.exp(-0.5 * ((x - 120.0) / 4.0) ** 2)  # zero loss
    spec += 12.0 * np.exp(-0.5 * ((x - 420.0) / 90.0) ** 2)  # plasmon
    spec += 1.6 * np.clip((x + 1.0) / 200.0, 1e-3, None) ** -0.5  # tail
    thickness = 0.6 + 0.4 * np.sin(np.linspace(0.0, 3.0, n_pos)) ** 2
    return (thickness[:, None] * spec[None, :]).astype(np.float32)


def run(path: str | None, frames: int, repeats: int) -> float:
    det_mod = load_detector(path)
    det = det_mod.CCDDetector(det_mod.DetectorParameters(), rng=1, n_threads=1)
    rows = low_loss_rows()
    repeats_per_row = np.full(rows.shape[0], 6)
    area = (34, 0, 34 + 6 * rows.shape[0], rows.shape[1])
    images = [det_mod.RowImage(rows * np.float32(1.0 + 1e-3 * k), repeats_per_row) for k in range(frames + 1)]
    det.expose(images[-1], 0.05, binning=(6, 1), readout_area=area)  # maps, kernels, gain
    per_frame = []
    for _ in range(repeats):
        t0 = time.process_time()
        for img in images[:frames]:
            det.expose(img, 0.05, binning=(6, 1), readout_area=area)
        per_frame.append((time.process_time() - t0) / frames)
    return statistics.median(per_frame)


def compare(rev: str, rounds: int, frames: int, repeats: int) -> None:
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as d:
        old_file = Path(d) / "detector.py"
        old_file.write_bytes(subprocess.run(["git", "show", f"{rev}:simulators/detector.py"], cwd=root,
                                            capture_output=True, check=True).stdout)
        res: dict[str, list[float]] = {"old": [], "new": []}
        for _ in range(rounds):
            for name, extra in (("old", ["--module", str(old_file)]), ("new", [])):
                out = subprocess.run([sys.executable, __file__, "--frames", str(frames), "--repeats", str(repeats), *extra],
                                     capture_output=True, text=True, check=True).stdout
                res[name].append(float(out.split("ms")[0].split()[-1]))
    o, n = statistics.median(res["old"]), statistics.median(res["new"])
    print(f"CPU ms per new low-loss frame (median of {rounds} alternating processes): old ({rev}) {o:.1f} "
          f"{[round(v, 1) for v in res['old']]}, new {n:.1f} {[round(v, 1) for v in res['new']]}, new/old {n / o:.2f}")
    print(f"load average: {open('/proc/loadavg').read().split()[:3]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--module", help="a detector.py to use in place of the installed one")
    ap.add_argument("--old", metavar="REV")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    if a.old:
        compare(a.old, a.rounds, a.frames, a.repeats)
        return
    ms = 1e3 * run(a.module, a.frames, a.repeats)
    print(f"CPU per new low-loss frame (330 x 1024 binned 6 x 1): {ms:.1f} ms")


if __name__ == "__main__":
    main()
