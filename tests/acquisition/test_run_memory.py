"""A dry run's memory does not grow with the number of exposures (issue 4: frames stream to disk).

The same protocol (si-nanoparticle-hold: one 330 x 2048 Li-K image every 5 s) is run in-process
for 2 and for 8 images under tracemalloc, which sees numpy's buffers. Each image is 2.7 MB as
float32, so keeping the six extra frames anywhere (runner, run file, progress) would add 16 MB;
the peaks must agree within three images (8.1 MB). The peak is set by the EELS synthesis of an
image, whose temporaries depend on that exposure's random energy drift (the synthesis margin
is rounded up to a power of two channels): 19-26 MB over the images of this protocol, so the
8-image run peaks 4 MB above the 2-image run without anything being kept. (From the second image on, the gain and dark references
and the read-out caches exist while an image is synthesised, so a 1-image run peaks lower.) (The whole process's peak RSS, with the imported
libraries, is measured by bench/bench_dry_run.py --scaling.)
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest
import yaml

from insitem.cli.main import main
from insitem.protocols.loader import resolve

IMAGE_BYTES = 330 * 2048 * 4


def run_peak(tmp_path: Path, n_images: int, tag: str) -> int:
    doc = yaml.safe_load(resolve("si-nanoparticle-hold").read_text(encoding="utf-8"))
    doc["name"] = f"si-hold-{n_images}-{tag}"
    doc["steps"][0]["hold"]["duration"] = f"{5 * n_images} s"
    proto = tmp_path / f"si-hold-{n_images}-{tag}.yaml"
    proto.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    tracemalloc.start()
    try:
        rc = main(["run", str(proto), "--sim", "--out", str(tmp_path / f"run-{n_images}-{tag}.h5"), "--no-progress", "--no-figures"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rc == 0
    return peak


@pytest.mark.slow  # three whole dry runs with the full-size camera: 20 s of CPU
def test_peak_memory_does_not_grow_with_the_number_of_exposures(tmp_path: Path) -> None:
    run_peak(tmp_path, 1, "warm-up")  # first run: imports, sampler tables, EELS cross-section caches
    small = run_peak(tmp_path, 2, "small")
    large = run_peak(tmp_path, 8, "large")
    assert large - small < 3 * IMAGE_BYTES, f"peak grew by {(large - small) / 2**20:.1f} MiB from 2 to 8 images"
