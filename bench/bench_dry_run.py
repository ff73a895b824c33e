"""Whole-protocol dry runs: wall time and peak RSS of `insitem run NAME --sim` (issue 4 targets:
ex-situ-lasgtp, about 83 h of experiment, in <= 10 s; peak RSS <= 300 MB however many exposures).

Each repeat runs in a fresh process (as a user would), without figures, and reports the wall
time of the run command, its CPU time (user + system of the child after the imports: less
sensitive than the wall time to other work on a shared machine, but it counts both cores when
the detector draws on two threads), the resident memory after the imports and the child's peak RSS.

    .venv/bin/python bench/bench_dry_run.py [--repeats 3] [PROTOCOL ...]

`--stages` runs each protocol once more and prints where the resident memory grows: RSS and
peak (VmHWM) around the rig set-up, the detector construction, the first exposure, and the
calls that set a new peak (camera read-out, world image, EELS synthesis, detector exposure,
gain reference, live analysis, run-file writes): how far the peak rose above the RSS at entry.

`--old REV` alternates runs of the whole repository at git revision REV (exported to a temporary
folder and put first on PYTHONPATH) with the working tree's, and prints the medians of wall and
CPU time of both and their ratios.

`--old-detector REV` alternates runs with the detector module of git revision REV (loaded in
place of the working tree's) and the current one, and prints both medians and the ratio old/new.

`--scaling N` checks that the peak does not grow with the number of exposures: it runs
si-nanoparticle-hold (one Li-K image every 5 s) cut to N and to 4N images and prints both peaks;
exit status 1 if the 4N run peaks more than `--tolerance-mb` (default 8 MB) above the N run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import resource, sys, time
def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
if len(sys.argv) > 3:  # an older detector module (file path) in place of the installed one
    import importlib.util
    spec = importlib.util.spec_from_file_location("insitem.simulators.detector", sys.argv[3])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["insitem.simulators.detector"] = mod
    spec.loader.exec_module(mod)
t0 = time.perf_counter()
from insitem.cli.main import main
t1 = time.perf_counter()
_ru = resource.getrusage(resource.RUSAGE_SELF)
cpu0 = _ru.ru_utime + _ru.ru_stime
rss_import = rss_mb()
rc = main(["run", sys.argv[1], "--sim", "--out", sys.argv[2], "--no-progress", "--no-figures"])
t2 = time.perf_counter()
ru = resource.getrusage(resource.RUSAGE_SELF)
peak = ru.ru_maxrss / 1024
print(f"RESULT {rc} {t1 - t0:.3f} {t2 - t1:.3f} {rss_import:.1f} {peak:.1f} {ru.ru_utime + ru.ru_stime - cpu0:.3f}")
"""

STAGES = """
import functools, sys
def status():
    d = {}
    for line in open("/proc/self/status"):
        if line.startswith(("VmRSS", "VmHWM")):
            d[line[:5]] = int(line.split()[1]) / 1024
    return d
from insitem.cli.main import main
import insitem.acquisition.live_analysis as la, insitem.acquisition.runfile as rf
import insitem.simulators.detector as det, insitem.simulators.devices as dev
import insitem.simulators.eels as eels, insitem.simulators.world as world
s = status()
print(f"after imports: RSS {s['VmRSS']:.0f} MB")
rises = {}
seen = set()
def wrap(owner, name, label, once=False):
    f = getattr(owner, name)
    @functools.wraps(f)
    def g(*a, **k):
        s0 = status()
        try:
            return f(*a, **k)
        finally:
            s1 = status()
            r = rises.setdefault(label, [0.0, 0.0, 0, 0.0])
            if s1["VmHWM"] > s0["VmHWM"]:  # this call set a new peak: how far above the RSS at entry
                r[0] = max(r[0], s1["VmHWM"] - s0["VmRSS"])
                r[1] = max(r[1], s1["VmHWM"])
            r[2] += 1
            r[3] = max(r[3], s0["VmRSS"])
            if once and label not in seen:
                seen.add(label)
                print(f"{label}: RSS {s0['VmRSS']:.0f} -> {s1['VmRSS']:.0f} MB, peak {s1['VmHWM']:.0f} MB")
    setattr(owner, name, g)
wrap(world.SimWorld, "from_protocol", "rig set-up (SimWorld.from_protocol)", once=True)
wrap(det.CCDDetector, "__init__", "  detector construction (maps)", once=True)
wrap(dev.SimCamera, "read_frame", "camera read-out (whole frame path)")
wrap(world.SimWorld, "expected_rows", "  SimWorld.expected_rows")
wrap(eels.EELSSynthesizer, "synthesize", "    EELSSynthesizer.synthesize")
wrap(det.CCDDetector, "expose", "  CCDDetector.expose")
wrap(det.CCDDetector, "gain_reference", "  CCDDetector.gain_reference")
wrap(det.CCDDetector, "dark_reference", "  CCDDetector.dark_reference")
wrap(la.LiveLiProfile, "__call__", "live Li profile (progress hook)")
wrap(rf.RunFile, "append_exposure", "RunFile.append_exposure")
main(["run", sys.argv[1], "--sim", "--out", sys.argv[2], "--no-progress", "--no-figures"])
print(f"{'call':40} {'calls':>5} {'RSS at entry max':>17} {'new peak: rise':>15} {'new peak':>9}")
for label, (rise, hwm, n, entry) in rises.items():
    new = f"{rise:12.0f} MB {hwm:6.0f} MB" if hwm else f"{'-':>15} {'-':>9}"
    print(f"{label:40} {n:5d} {entry:14.0f} MB {new}")
s = status()
print(f"end of run: RSS {s['VmRSS']:.0f} MB, peak {s['VmHWM']:.0f} MB")
"""


def one(protocol: str, detector_file: str | None = None, old_tree: Path | None = None) -> tuple[float, float, float, float, float]:
    """(import s, run s, import RSS MB, peak RSS MB, run CPU s) of one dry run in a fresh process;
    `old_tree`: a folder that holds an `insitem` package of another revision (`old_tree_of`)."""
    env = dict(os.environ)
    if old_tree is not None:
        env["PYTHONPATH"] = str(old_tree)
    with tempfile.TemporaryDirectory() as d:
        out = str(Path(d) / "run.h5")
        extra = [detector_file] if detector_file else []
        r = subprocess.run([sys.executable, "-c", CHILD, protocol, out, *extra], capture_output=True, text=True,
                           timeout=1800, env=env)
        line = next((x for x in r.stdout.splitlines() if x.startswith("RESULT")), None)
        if line is None:
            raise SystemExit(f"{protocol}: run failed: {r.stderr[-500:]}")
        _, rc, t_import, t_run, rss_import, rss, cpu = line.split()
        if rc != "0":
            raise SystemExit(f"{protocol}: run failed: {r.stderr[-500:]}")
        return float(t_import), float(t_run), float(rss_import), float(rss), float(cpu)


def old_tree_of(rev: str, directory: Path) -> Path:
    """The repository at git revision `rev` as an importable `insitem` package under `directory`
    (put first on PYTHONPATH it comes before the editable install, whose finder follows sys.path)."""
    root = Path(__file__).resolve().parent.parent
    src = directory / "src"
    src.mkdir()
    archive = subprocess.run(["git", "archive", rev], cwd=root, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    pkg = directory / "pkg" / "insitem"
    pkg.mkdir(parents=True)
    for top in ("drivers", "simulators", "acquisition", "protocols", "analysis", "api"):
        if (src / top).is_dir():
            (pkg / top).symlink_to(src / top)
    check = subprocess.run([sys.executable, "-c", "import insitem.simulators.world as w; print(w.__file__)"],
                           capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(pkg.parent)})
    if not Path(check.stdout.strip()).resolve().is_relative_to(src.resolve()):
        raise SystemExit(f"the old tree is not the one imported: {check.stdout or check.stderr}")
    return pkg.parent


def compare_tree(protocols: list[str], rev: str, repeats: int) -> None:
    """Old/new pairs: the whole tree of `rev` and the working tree, alternating in the same minutes."""
    with tempfile.TemporaryDirectory() as d:
        tree = old_tree_of(rev, Path(d))
        print(f"{'protocol':24} {'old run s':>10} {'new run s':>10} {'new/old':>8} {'old CPU s':>10} {'new CPU s':>10} "
              f"{'new/old':>8} {'old peak MB':>12} {'new peak MB':>12}  (medians of {repeats} pairs; old = {rev})")
        for p in protocols:
            old, new = [], []
            for _ in range(repeats):
                old.append(one(p, old_tree=tree))
                new.append(one(p))
            med = statistics.median
            to, tn = med(r[1] for r in old), med(r[1] for r in new)
            co, cn = med(r[4] for r in old), med(r[4] for r in new)
            print(f"{p:24} {to:10.2f} {tn:10.2f} {tn / to:8.2f} {co:10.2f} {cn:10.2f} {cn / co:8.2f} "
                  f"{max(r[3] for r in old):12.0f} {max(r[3] for r in new):12.0f}")
            print(f"{'':24} old runs {[round(r[1], 2) for r in old]} CPU {[round(r[4], 2) for r in old]}")
            print(f"{'':24} new runs {[round(r[1], 2) for r in new]} CPU {[round(r[4], 2) for r in new]}", flush=True)
    print(f"load average: {open('/proc/loadavg').read().split()[:3]}")


def stages(protocol: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        r = subprocess.run([sys.executable, "-c", STAGES, protocol, str(Path(d) / "run.h5")], capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            raise SystemExit(f"{protocol}: run failed: {r.stderr[-500:]}")
        print(f"--- {protocol}")
        print(r.stdout.rstrip())


def scaled_protocol(directory: Path, n_images: int) -> Path:
    """si-nanoparticle-hold cut to `n_images` images (one every 5 s)."""
    import yaml

    from insitem.protocols.loader import resolve

    doc = yaml.safe_load(resolve("si-nanoparticle-hold").read_text(encoding="utf-8"))
    doc["name"] = f"si-hold-{n_images}-images"
    doc["steps"][0]["hold"]["duration"] = f"{5 * n_images} s"
    path = directory / f"si-hold-{n_images}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def compare_detector(protocols: list[str], rev: str, repeats: int) -> None:
    """Old/new pairs: the detector module of `rev` loaded in place of the working tree's, alternating."""
    root = Path(__file__).resolve().parent.parent
    src = subprocess.run(["git", "show", f"{rev}:simulators/detector.py"], cwd=root, capture_output=True, text=True, check=True).stdout
    with tempfile.TemporaryDirectory() as d:
        old_file = Path(d) / "detector_old.py"
        old_file.write_text(src, encoding="utf-8")
        print(f"{'protocol':24} {'old run s':>10} {'new run s':>10} {'old/new':>8} {'old peak MB':>12} {'new peak MB':>12}  (medians of {repeats} pairs; old = {rev})")
        for p in protocols:
            old, new = [], []
            for _ in range(repeats):
                old.append(one(p, str(old_file)))
                new.append(one(p))
            to, tn = statistics.median(r[1] for r in old), statistics.median(r[1] for r in new)
            print(f"{p:24} {to:10.2f} {tn:10.2f} {to / tn:8.2f} {max(r[3] for r in old):12.0f} {max(r[3] for r in new):12.0f}")
            print(f"{'':24} old runs {[round(r[1], 2) for r in old]}, new runs {[round(r[1], 2) for r in new]}")
    print(f"load average: {open('/proc/loadavg').read().split()[:3]}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("protocols", nargs="*", default=["ex-situ-lasgtp", "in-situ-lasgtp", "si-nanoparticle-hold"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--stages", action="store_true", help="also print the memory breakdown of one run per protocol")
    ap.add_argument("--scaling", type=int, metavar="N", help="only compare the peak RSS of N and 4N images")
    ap.add_argument("--tolerance-mb", type=float, default=8.0)
    ap.add_argument("--old", metavar="REV", help="alternate runs of the whole tree of git revision REV and the "
                    "working tree (old, new, old, ...) and print both medians of wall and CPU time and their ratios")
    ap.add_argument("--old-detector", metavar="REV", help="alternate runs with simulators/detector.py of git revision REV "
                    "(old, new, old, ... in the same minutes) and print both medians and their ratio")
    args = ap.parse_args()
    if args.old:
        compare_tree(args.protocols, args.old, args.repeats)
        return
    if args.old_detector:
        compare_detector(args.protocols, args.old_detector, args.repeats)
        return
    if args.scaling:
        with tempfile.TemporaryDirectory() as d:
            peaks = {}
            for n in (args.scaling, 4 * args.scaling):
                rows = [one(str(scaled_protocol(Path(d), n))) for _ in range(args.repeats)]
                peaks[n] = max(r[3] for r in rows)
                print(f"{n:4d} images: run {statistics.median(r[1] for r in rows):6.2f} s, peak RSS {peaks[n]:6.0f} MB (max of {args.repeats})")
        growth = peaks[4 * args.scaling] - peaks[args.scaling]
        ok = growth <= args.tolerance_mb
        print(f"peak RSS growth from {args.scaling} to {4 * args.scaling} images: {growth:+.1f} MB "
              f"({'within' if ok else 'OVER'} the {args.tolerance_mb:g} MB tolerance)")
        print(f"load average: {open('/proc/loadavg').read().split()[:3]}")
        raise SystemExit(0 if ok else 1)
    print(f"{'protocol':24} {'run s (median)':>15} {'min':>7} {'CPU s':>7} {'import s':>9} {'import RSS MB':>14} {'peak RSS MB':>12}")
    for p in args.protocols:
        rows = [one(p) for _ in range(args.repeats)]
        runs = [r[1] for r in rows]
        print(f"{p:24} {statistics.median(runs):15.2f} {min(runs):7.2f} {statistics.median(r[4] for r in rows):7.2f} "
              f"{statistics.median(r[0] for r in rows):9.2f} "
              f"{statistics.median(r[2] for r in rows):14.0f} {max(r[3] for r in rows):12.0f}")
    print(f"load average: {open('/proc/loadavg').read().split()[:3]}")
    if args.stages:
        for p in args.protocols:
            stages(p)


if __name__ == "__main__":
    main()
