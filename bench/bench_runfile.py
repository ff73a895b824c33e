"""Run-file write speed and memory: does memory stay flat as a run grows, and what does crash
safety (SWMR + flush per exposure) cost against a plain h5py write?

Run: .venv/bin/python bench/bench_runfile.py [--repeats 3] [--exposures 200] [--ec-points 1000000]

Each measurement runs in a fresh subprocess so its peak RSS (ru_maxrss) belongs to that run
alone. Prints medians over the repeats and ratios measured in this same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROWS, CHANNELS = 330, 2048

CHILD = textwrap.dedent(
    """
    import json, resource, sys, time
    import numpy as np
    import h5py
    from insitem.acquisition.runfile import RunFile, RunFileConfig, WindowSpec

    mode, path, n_exp, n_ec, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    rows, cols = {rows}, {cols}
    rng = np.random.default_rng(0)
    frame = rng.poisson(800, size=(rows, cols)).astype(np.float32)

    def rss_kib():
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])

    out = {{}}
    if mode == "runfile":
        cfg = RunFileConfig(
            windows=(WindowSpec(name="w", n_rows=rows, n_channels=cols, energy_offset_eV=400.0,
                                dispersion_eV_per_channel=0.1),),
            beam_energy_keV=200.0, convergence_angle_mrad=0.5, collection_angle_mrad=10.0,
        )
        rf = RunFile.create(path, cfg, overwrite=True)
        out["rss_start_kib"] = rss_kib()
        t0 = time.perf_counter()
        for i in range(n_exp):
            frame[0, 0] = i
            rf.append_exposure("w", frame, t_start_s=float(i), exposure_s=1.0)
            if i == n_exp // 4 - 1:
                out["rss_quarter_kib"] = rss_kib()
        out["exposure_s"] = time.perf_counter() - t0
        out["rss_after_exposures_kib"] = rss_kib()
        t = np.arange(batch, dtype=float)
        t0 = time.perf_counter()
        for k in range(n_ec // batch):
            rf.append_electrochemistry(t + k * batch, 0.5, 1e-9, cycle=1, step=0)
        rf.flush()
        out["ec_s"] = time.perf_counter() - t0
        rf.close("completed")
    elif mode == "plain":
        # Baseline: the same frames appended to a plain (non-SWMR) h5py dataset, one flush at the end.
        with h5py.File(path, "w") as f:
            ds = f.create_dataset("d", shape=(0, rows, cols), maxshape=(None, rows, cols),
                                  chunks=(1, rows, cols), dtype=np.float32)
            out["rss_start_kib"] = rss_kib()
            t0 = time.perf_counter()
            for i in range(n_exp):
                frame[0, 0] = i
                ds.resize(i + 1, axis=0)
                ds[i] = frame
            f.flush()
            out["exposure_s"] = time.perf_counter() - t0
            out["rss_after_exposures_kib"] = rss_kib()
    out["peak_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(out))
    """
).format(rows=ROWS, cols=CHANNELS)


def run(mode: str, path: Path, n_exp: int, n_ec: int, batch: int) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(path), str(n_exp), str(n_ec), str(batch)],
        capture_output=True,
        text=True,
        check=True,
    )
    path.unlink(missing_ok=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--exposures", type=int, default=200)
    ap.add_argument("--ec-points", type=int, default=1_000_000)
    ap.add_argument("--ec-batch", type=int, default=100, help="points per append_electrochemistry call")
    args = ap.parse_args()
    mb_per_exposure = ROWS * CHANNELS * 4 / 1e6
    with tempfile.TemporaryDirectory(prefix="bench_runfile_") as tmp:
        path = Path(tmp) / "run.h5"
        results: dict[str, list[dict[str, float]]] = {"runfile": [], "runfile_small": [], "plain": []}
        for _ in range(args.repeats):
            results["runfile"].append(run("runfile", path, args.exposures, args.ec_points, args.ec_batch))
            results["runfile_small"].append(run("runfile", path, args.exposures // 4, args.ec_points // 4, args.ec_batch))
            results["plain"].append(run("plain", path, args.exposures, 0, 1))

    def med(mode: str, key: str) -> float:
        return statistics.median(r[key] for r in results[mode])

    n = args.exposures
    rf_s, plain_s = med("runfile", "exposure_s"), med("plain", "exposure_s")
    print(f"frames {ROWS}x{CHANNELS} float32 = {mb_per_exposure:.2f} MB each, {args.repeats} repeats, medians")
    print(f"RunFile.append_exposure (SWMR, flush each): {n} in {rf_s:.2f} s = {1e3 * rf_s / n:.2f} ms/exposure, "
          f"{n * mb_per_exposure / rf_s:.0f} MB/s")
    print(f"plain h5py append, one flush:               {n} in {plain_s:.2f} s = {1e3 * plain_s / n:.2f} ms/exposure, "
          f"{n * mb_per_exposure / plain_s:.0f} MB/s")
    print(f"ratio RunFile / plain h5py time: {rf_s / plain_s:.2f}")
    ec_s = med("runfile", "ec_s")
    print(f"electrochemistry: {args.ec_points} points in batches of {args.ec_batch}: {ec_s:.2f} s = "
          f"{args.ec_points / ec_s / 1e6:.2f} M points/s")
    for mode, label, n_e in (("runfile_small", "RunFile", n // 4), ("runfile", "RunFile", n), ("plain", "plain h5py", n)):
        print(f"peak RSS {label:10s} {n_e:4d} exposures: {med(mode, 'peak_rss_kib') / 1024:.0f} MiB "
              f"(at start {med(mode, 'rss_start_kib') / 1024:.0f} MiB, after exposures "
              f"{med(mode, 'rss_after_exposures_kib') / 1024:.0f} MiB)")
    growth = med("runfile", "peak_rss_kib") - med("runfile_small", "peak_rss_kib")
    print(f"peak RSS growth from {n // 4} to {n} exposures (and {args.ec_points // 4} to {args.ec_points} EC points): "
          f"{growth / 1024:.1f} MiB for {(n - n // 4) * mb_per_exposure:.0f} MB more data")


if __name__ == "__main__":
    main()
