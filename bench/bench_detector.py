"""Speed of the CCD detector model: one full 2048 x 2048 noisy frame.

Run: .venv/bin/python bench/bench_detector.py [--repeats N]

Image: a realistic SR-EELS expected image, 330 positions x 2048 channels (0.1 eV/ch from 35 eV,
the low-loss window of physics.md 6.1) expanded to 2048 CCD rows (~6.2 rows per position,
physics.md section 0): plasmon-tail power law E^-3.5 with a Li-K edge at 55 eV, three layers
(electrode | electrolyte | Pt) of different intensity; 1 to 1e4 primary electrons per pixel.

Prints medians over the repeats of, in the same run:
  * CCDDetector.expose, same expected image every frame (PSF of the mean cached),
  * CCDDetector.expose, a new expected image every frame (PSF of the mean recomputed),
  * both with n_threads=1,
  * numpy's plain rng.poisson on the same image (the reference the target is set against),
  * float32 standard_normal for 4 Mpx with PCG64 and SFC64 (the generator choice),
and the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import numpy as np

from insitem.simulators.detector import CCDDetector, DetectorParameters


def sr_eels_image(rows: int = 2048, positions: int = 330, channels: int = 2048) -> np.ndarray:
    """Expected primary electrons per unbinned pixel, float32 (rows, channels)."""
    e = 35.0 + 0.1 * (np.arange(channels) + 0.5)  # eV
    y = np.arange(positions)
    layer = np.where(y < 100, 0.35, np.where(y < 280, 1.0, 0.12))  # electrode | electrolyte | Pt
    amp = layer * (1.0 + 0.2 * np.sin(y / 15.0))
    li_k = 0.15 * (e > 55.0) * np.exp(-np.clip(e - 55.0, 0, None) / 40.0)  # Li-K edge on the tail
    spec = 8.0e3 * ((e / 35.0) ** -3.5 + li_k)
    img = amp[:, None] * spec[None, :]
    img = np.maximum(img, 1.0)
    row_pos = (np.arange(rows) * positions) // rows
    return img[row_pos].astype(np.float32)


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    n = args.repeats

    mu = sr_eels_image()
    print(f"image: {mu.shape}, {mu.min():.2f} .. {mu.max():.0f} e/px, "
          f"{np.mean(mu < DetectorParameters().exact_below_e) * 100:.1f} % of pixels drawn exactly")

    det = CCDDetector(DetectorParameters(), rng=1, n_threads=2)  # default is n_threads=1
    det1 = CCDDetector(DetectorParameters(), rng=1, n_threads=1)
    det.expose(mu, 30.0)  # warm up: conv matrix, buffers
    det1.expose(mu, 30.0)
    new_images = [mu * np.float32(1.0 + 1e-3 * k) for k in range(2 * n)]
    it = iter(new_images)

    rng = np.random.default_rng(2)
    mu64 = mu.astype(np.float64)
    out = np.empty(mu.shape, dtype=np.float32)
    pcg = np.random.Generator(np.random.PCG64(3))
    sfc = np.random.Generator(np.random.SFC64(3))

    results = {
        "expose, same image (2 threads)": median_ms(lambda: det.expose(mu, 30.0), n),
        "expose, new image (2 threads)": median_ms(lambda: det.expose(next(it), 30.0), n),
        "expose, same image (1 thread)": median_ms(lambda: det1.expose(mu, 30.0), n),
        "expose, new image (1 thread)": median_ms(lambda: det1.expose(next(it), 30.0), n),
        "numpy rng.poisson(image)": median_ms(lambda: rng.poisson(mu64), n),
        "standard_normal f32 4 Mpx PCG64": median_ms(lambda: pcg.standard_normal(out=out, dtype=np.float32), n),
        "standard_normal f32 4 Mpx SFC64": median_ms(lambda: sfc.standard_normal(out=out, dtype=np.float32), n),
    }
    for name, ms in results.items():
        print(f"{name:36s} median {ms:7.1f} ms  (over {n})")
    ref = results["numpy rng.poisson(image)"]
    print(f"ratio expose(same image) / rng.poisson   = {results['expose, same image (2 threads)'] / ref:.2f}")
    print(f"ratio expose(new image)  / rng.poisson   = {results['expose, new image (2 threads)'] / ref:.2f}")
    print(f"ratio expose(new image, 1 thread) / rng.poisson = "
          f"{results['expose, new image (1 thread)'] / ref:.2f}")
    print(f"ratio 1 thread / 2 threads (same image)  = "
          f"{results['expose, same image (1 thread)'] / results['expose, same image (2 threads)']:.2f}")
    print(f"ratio SFC64 / PCG64 normals              = "
          f"{results['standard_normal f32 4 Mpx SFC64'] / results['standard_normal f32 4 Mpx PCG64']:.2f}")
    det.close()


if __name__ == "__main__":
    main()
