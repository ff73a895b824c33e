"""The ex-situ LASGTP dry run against the paper's Fig. 6 numbers, over seeds (issue 14).

For each seed the shipped `ex-situ-lasgtp` protocol is dry-run with `sample.seed` set to it, and
its run file is analysed with `insitem.api.analyze` (what `insitem analyze` writes to
summary.json: the analysis sees only the spectra; its references come from the data). The
table gives, per seed, the analysis' Li maximum (x parent), electrode width, Ti3+/Ti4+
boundary, Ti-L3 shift of the Ti3+ rows, the O-O range, the median L2/L3 ratio of the Ti3+ and
of the Ti4+ rows, then the median and range over seeds, the simulated world's own ground truth
(the last sample in the run file; the same for every seed, the cell has no noise) and the
paper's value ([Y14] via ../shared/reference/physics.md §0 and §3.5).

    .venv/bin/python bench/compare_ex_situ.py [--seeds 0 1 2 3 4] [--out DIR] [--markdown]

Run files and summaries go to DIR (default: a temporary folder, removed at the end); `--reuse`
analyses the run files already in DIR again.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import yaml
from scipy.ndimage import uniform_filter1d

import insitem.api as ins
from insitem.analysis.lithium import LiParams
from insitem.analysis.profiles import crossing_from_pt
from insitem.protocols.loader import resolve

PROTOCOL = "ex-situ-lasgtp"

#: quantity -> (label, unit, the paper's value as physics.md gives it)
QUANTITIES: dict[str, tuple[str, str, str]] = {
    "c_max": ("Li max (3-row mean, >= 30 nm from Pt)", "x parent", "~8.5"),
    "c_pt": ("Li at Pt (model only)", "x parent", "~8.5"),
    "width_nm": ("electrode width (10 % of max excess)", "nm", "~400 (the Gaussian fit to the paper's profile: 381 at 10 %)"),
    "ti3_boundary_nm": ("Ti3+/Ti4+ boundary", "nm", "~160"),
    "ti3_shift_eV": ("Ti-L3 shift, Ti3+ rows", "eV", "-1.7"),
    "oo_parent_nm": ("O-O, parent rows", "nm", "0.280"),
    "oo_electrode_nm": ("O-O, electrode rows", "nm", "0.310"),
    "l2l3_ti3": ("L2/L3, Ti3+ rows (median)", "", "1.25"),
    "l2l3_ti4": ("L2/L3, Ti4+ rows (median)", "", "1.30"),
}


def seeded_protocol(seed: int) -> dict[str, Any]:
    doc = yaml.safe_load(resolve(PROTOCOL).read_text(encoding="utf-8"))
    doc["sample"]["seed"] = seed
    return doc


def _median_where(values: list[Any], mask: np.ndarray) -> float:
    v = np.array([np.nan if x is None else float(x) for x in values])
    v = v[mask & np.isfinite(v)]
    return float(np.median(v)) if v.size else math.nan


def from_summary(s: dict[str, Any]) -> dict[str, float]:
    """The compared numbers from one summary.json (SI -> nm)."""
    ti3 = np.array([bool(x) for x in s["ti3"]])
    has_ti = np.array([x is not None for x in s["ti_l2_l3"]])
    return {
        "c_max": float(s["c_max"]),
        "c_pt": math.nan,
        "width_nm": float(s["electrode_width_m"]) * 1e9,
        "ti3_boundary_nm": float(s["ti3_boundary_m"]) * 1e9,
        "ti3_shift_eV": math.nan if s["ti3_shift_eV"] is None else float(s["ti3_shift_eV"]),
        "oo_parent_nm": float(s["oo_range_m"][0]) * 1e9,
        "oo_electrode_nm": float(s["oo_range_m"][1]) * 1e9,
        "l2l3_ti3": _median_where(s["ti_l2_l3"], ti3 & has_ti),
        "l2l3_ti4": _median_where(s["ti_l2_l3"], ~ti3 & has_ti),
    }


def ground_truth(run_file: Path) -> dict[str, float]:
    """The world's last ground-truth sample, reduced the way the analysis reduces its profile
    (`LiParams`: the maximum of the 3-row running mean at >= 30 nm from Pt, the width where the
    excess falls below 10 % of that maximum's; the Ti3+ boundary where the Ti3+ fraction falls
    below 1/2; O-O far from Pt and its maximum), and c/c0 in the row next to Pt."""
    with h5py.File(run_file, "r") as f:
        g = f["insitem/ground_truth"]
        y = g["position_m"][()]
        c = g["li_fraction"][-1]
        f3 = g["ti3_fraction"][-1]
        oo = g["oo_distance_m"][-1]
    el = y >= 0
    p = LiParams()
    smooth = uniform_filter1d(c, p.max_smooth_rows, mode="nearest")
    c_max = float(np.max(smooth[el & (y >= p.max_min_distance_m)]))
    return {
        "c_max": c_max,
        "c_pt": float(c[el][np.argmin(y[el])]),
        "width_nm": crossing_from_pt(y, c, 1.0 + p.width_threshold * (c_max - 1.0)) * 1e9,
        "ti3_boundary_nm": crossing_from_pt(y, f3, 0.5) * 1e9,
        "ti3_shift_eV": math.nan,
        "oo_parent_nm": float(oo[el][-1]) * 1e9,
        "oo_electrode_nm": float(np.max(oo[el])) * 1e9,
        "l2l3_ti3": math.nan,
        "l2l3_ti4": math.nan,
    }


def fmt(x: float, key: str) -> str:
    if not math.isfinite(x):
        return "-"
    return f"{x:.3f}" if key.startswith(("oo_", "l2l3")) else f"{x:.2f}" if key in ("c_max", "c_pt", "ti3_shift_eV") else f"{x:.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--out", type=Path, help="keep run files and summaries here")
    ap.add_argument("--reuse", action="store_true", help="with --out: analyse run files already there instead of running again")
    args = ap.parse_args()
    tmp = None
    if args.out is None:
        tmp = tempfile.TemporaryDirectory()
        out = Path(tmp.name)
    else:
        out = args.out
        out.mkdir(parents=True, exist_ok=True)
    rows: dict[int, dict[str, float]] = {}
    truth: dict[str, float] = {}
    for seed in args.seeds:
        t0 = time.perf_counter()
        path = out / f"{PROTOCOL}-seed{seed}.h5"
        if not (args.reuse and path.exists()):
            path = Path(ins.dry_run(seeded_protocol(seed), path).path)
        t1 = time.perf_counter()
        summary = ins.analyze(path)
        (out / f"{PROTOCOL}-seed{seed}-summary.json").write_text(json.dumps(summary), encoding="utf-8")
        rows[seed] = from_summary(summary)
        truth = ground_truth(path)
        print(f"seed {seed}: dry run {t1 - t0:.1f} s, analysis {time.perf_counter() - t1:.1f} s", flush=True)
    seeds = list(rows)
    print()
    print("| quantity | " + " | ".join(f"seed {s}" for s in seeds) + " | median | range | model truth | paper [Y14] |")
    print("|---|" + "---|" * (len(seeds) + 4))
    for key, (label, unit, paper) in QUANTITIES.items():
        vals = [rows[s][key] for s in seeds]
        finite = [v for v in vals if math.isfinite(v)]
        med = statistics.median(finite) if finite else math.nan
        rng = f"{fmt(min(finite), key)} .. {fmt(max(finite), key)}" if finite else "-"
        name = f"{label} ({unit})" if unit else label
        print(f"| {name} | " + " | ".join(fmt(v, key) for v in vals)
              + f" | {fmt(med, key)} | {rng} | {fmt(truth.get(key, math.nan), key)} | {paper} |")
    print(f"\nload average: {open('/proc/loadavg').read().split()[:3]}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
