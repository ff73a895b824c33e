"""In-situ-lasgtp with 1 nm/min of drift, corrected: the shipped `drift` section (`track_groups: true`, a
50 ms tracking frame before each group) against the same without tracking frames (`no-frames`: the
low-loss image of each group tracks). The done-when variant of
tests/acquisition/test_drift_in_situ.py (the 50 ms low-loss image), the same seed.

Run: .venv/bin/python bench/drift_tracking_in_situ.py [shipped|no-frames]   (one run each, ~1-2 min)
Prints the Li-near-Pt rms error against the truth (on the specimen's coordinate and at a fixed interface), how far the image walked at the Li-K images, the
interface the analysis found, CPU time, and `insitem analyze`'s drift line. Numbers: docs/drift.md.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "acquisition"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import test_drift_in_situ as in_situ  # noqa: E402

from insitem.acquisition.analyze_run import analyze_file  # noqa: E402
from insitem.acquisition.drift_report import drift_line, drift_summary  # noqa: E402


def main(mode: str) -> None:
    base = in_situ._protocol

    def protocol(rate: float, _: str) -> dict:
        p = base(rate, "correct")
        if mode == "no-frames":
            p["drift"].pop("track_groups", None)
        return p

    in_situ._protocol = protocol  # type: ignore[assignment]
    with tempfile.TemporaryDirectory() as tmp:
        c0 = time.process_time()
        run = in_situ._run(Path(tmp), 1.0, mode)
        cpu = time.process_time() - c0
        walk = run.image_displacement_m - run.image_displacement_m[0]
        interface = analyze_file(run.path).summary.geometry.interface_m
        print(f"{mode}: Li near Pt rms error {run.rms_error:.3f} (max {np.max(np.abs(run.analysed - run.truth)):.2f}) c0 "
              f"on the specimen's coordinate, {run.rms_error_fixed:.3f} at a fixed interface; "
              f"image walk at the Li-K images max {np.max(np.abs(walk)) * 1e9:.2f} nm; interface {interface * 1e9:.1f} nm; "
              f"CPU {cpu:.0f} s")
        print(drift_line(drift_summary(run.path)))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "shipped")
