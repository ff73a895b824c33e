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
the binned sub-frames of the ex-situ-lasgtp dry run (a new image every frame, binned 6 x 1 over
the 1980-row readout area): a 50 ms low-loss sub-frame (1024 channels) and a 7.5 s Li-K sub-frame
(2048 channels), each with the fluctuation drawn on the readout lattice (default) and per
unbinned pixel (`binned_fluctuation=False`), and the ratios.
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


def low_loss_subframe(rows: int = 1980, positions: int = 330, channels: int = 1024) -> np.ndarray:
    """Expected e/px of one 50 ms low-loss sub-frame over its 1980-row readout area (float32).

    Zero-loss peak (0.5 eV rms, ~1000 e/px at the top), a plasmon near 22 eV and its tail, from
    -10 eV at 0.1 eV/channel (the ex-situ-lasgtp low-loss window); ~70-80 % of the pixels are
    below 4 e/px (drawn exactly), as in the dry run.
    """
    e = -10.0 + 0.1 * (np.arange(channels) + 0.5)
    y = np.arange(positions)
    layer = np.where(y < 100, 0.8, np.where(y < 280, 1.0, 0.6))
    tail = 4.0 * np.clip(e / 30.0, 1e-3, None) ** -1.5 * (e > 30.0)
    spec = 1000.0 * np.exp(-0.5 * (e / 0.5) ** 2) + 14.0 * np.exp(-0.5 * ((e - 22.0) / 7.0) ** 2) + tail + 0.01
    img = layer[:, None] * spec[None, :]
    return np.repeat(img, rows // positions, axis=0).astype(np.float32)


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
    # binned sub-frames as the dry run takes them: new image every frame, the fluctuation drawn on
    # the readout lattice (default) or per unbinned pixel and summed (binned_fluctuation=False)
    sub = low_loss_subframe()
    area = (34, 0, 2014, 1024)
    lat = CCDDetector(DetectorParameters(), rng=1, n_threads=1)
    unb = CCDDetector(DetectorParameters(binned_fluctuation=False), rng=1, n_threads=1)
    subs = iter([sub * np.float32(1.0 + 1e-4 * k) for k in range(4 * n + 2)])
    lat.expose(next(subs), 0.05, (6, 1), area)
    unb.expose(next(subs), 0.05, (6, 1), area)
    results["low-loss sub-frame 6x1, lattice"] = median_ms(lambda: lat.expose(next(subs), 0.05, (6, 1), area), n)
    results["low-loss sub-frame 6x1, unbinned"] = median_ms(lambda: unb.expose(next(subs), 0.05, (6, 1), area), n)
    li_area = (34, 0, 2014, 2048)
    li = mu[34:2014] / np.float32(4.0)  # a 7.5 s Li-K sub-frame: the core-loss image at a quarter dose
    lis = iter([li * np.float32(1.0 + 1e-4 * k) for k in range(2 * n)])
    results["Li-K sub-frame 6x1, lattice"] = median_ms(lambda: lat.expose(next(lis), 7.5, (6, 1), li_area), n)
    results["Li-K sub-frame 6x1, unbinned"] = median_ms(lambda: unb.expose(next(lis), 7.5, (6, 1), li_area), n)
    print(f"low-loss sub-frame: {np.mean(sub < DetectorParameters().exact_below_e) * 100:.0f} % of pixels below exact_below_e")
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
    print(f"ratio low-loss sub-frame unbinned / lattice = "
          f"{results['low-loss sub-frame 6x1, unbinned'] / results['low-loss sub-frame 6x1, lattice']:.2f}")
    print(f"ratio Li-K sub-frame unbinned / lattice     = "
          f"{results['Li-K sub-frame 6x1, unbinned'] / results['Li-K sub-frame 6x1, lattice']:.2f}")
    print(f"load average: {open('/proc/loadavg').read().split()[:3]}")
    det.close()


if __name__ == "__main__":
    main()
