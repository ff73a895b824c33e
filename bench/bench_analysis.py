"""Speed of background subtraction + Li profile on a 330 x 2048 spectrum image, against exspy.

Run: .venv/bin/python bench/bench_analysis.py   (prints medians over repeats and the ratio)
Target: insitem's power-law background + Li-K profile <= 20 ms (median).
"""

from __future__ import annotations

import logging
import statistics
import time
import warnings

import numpy as np

from insitem.analysis import (
    EnergyAxis,
    LiParams,
    PositionAxis,
    SlitGeometry,
    li_profile,
    o_analysis,
    subtract_background,
    ti_analysis,
)

ROWS, CH = 330, 2048
LOW = EnergyAxis(offset_eV=35.0, scale_eV=0.1, size=CH)
POS = PositionAxis(offset_m=0.0, scale_m=5.70e-9, size=ROWS)
GEOM = SlitGeometry(interface_m=29.5 * 5.70e-9)
CORE = EnergyAxis(offset_eV=420.05, scale_eV=0.1, size=CH)


def make_image(rng: np.random.Generator) -> np.ndarray:
    E = LOW.values_eV
    d = POS.values_m - GEOM.interface_m
    c = np.where(d >= 0, 1 + 7.5 * np.exp(-((np.maximum(d, 0) / 251e-9) ** 2)), 0.0)
    bg = 8.2e10 * E**-4.0 * LOW.scale_eV
    edge = 400 * (0.5 + np.arctan(E - 57.0) / np.pi) + 2500 * np.exp(-0.5 * ((E - 61.5) / 1.27) ** 2) / 3.2
    return rng.poisson(bg[None, :] + c[:, None] * edge[None, :]).astype(np.uint16)


LL_SIM = EnergyAxis(offset_eV=-9.95, scale_eV=0.1, size=CH)  # the shipped low-loss window (channel centres)
LOW_SIM = EnergyAxis(offset_eV=35.05, scale_eV=0.1, size=CH)


def make_lowloss_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Low-loss (1.5 s) and Li-K (30 s) windows from the simulator's EELS synthesis, Poisson noise."""
    from insitem.simulators.sample import Sample

    s = Sample()
    d = POS.values_m - GEOM.interface_m
    c = np.where(d >= 0, 1 + 7.5 * np.exp(-((np.maximum(d, 0) / 251e-9) ** 2)), 1.0)
    col = s.column_state(d, c)
    from insitem.simulators.eels import EELSSynthesizer

    syn = EELSSynthesizer()
    n = 3.4e7  # electrons per row in 30 s (physics.md §1.5)
    ll = rng.poisson(syn.synthesize(LL_SIM.values_eV, col, n * 1.5 / 30)).astype(float)
    li = rng.poisson(syn.synthesize(LOW_SIM.values_eV, col, n)).astype(float)
    return ll, li


def make_core(rng: np.random.Generator) -> np.ndarray:
    """Core window: power law r = 3, Ti4+ / Ti3+ L2,3 (§1.8 shapes) and O-K with peak b from R(c) (§1.8)."""
    E = CORE.values_eV
    d = POS.values_m - GEOM.interface_m
    c = np.where(d >= 0, 1 + 7.5 * np.exp(-((np.maximum(d, 0) / 251e-9) ** 2)), 0.0)

    def g(centre, fwhm):
        s = fwhm / 2.355
        return np.exp(-0.5 * ((E - centre) / s) ** 2) / (s * 2.5066)

    ti4 = 2500 * (0.41 * g(457.0, 0.9) + 0.59 * g(459.0, 1.5)) + 3250 * (0.41 * g(463.0, 1.6) + 0.59 * g(465.0, 2.2))
    ti3 = 2500 * g(457.3, 2.0) + 3125 * g(463.3, 2.6)
    f3 = (c >= 6)[:, None]
    eb = 529.0 + 2.820 / (0.280 + 0.030 * np.clip((c - 1) / 7.5, 0, 1)) ** 2
    ok = 3000 * g(538.0, 4.0) + 5000 * np.exp(-0.5 * ((E - eb[:, None]) / 3.4) ** 2) / 8.5
    edges = (d >= 0)[:, None] * (np.where(f3, ti3, ti4) + ok)
    return rng.poisson(4.0e12 * E**-3.0 * CORE.scale_eV + edges).astype(np.uint16)


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main() -> None:
    img = make_image(np.random.default_rng(0))
    params = LiParams()

    def ours_profile() -> None:
        li_profile(img, LOW, POS, GEOM, params)

    def ours_full() -> None:
        # full-image background subtraction (every channel from the pre-edge on) + Li profile
        subtract_background(img, LOW, params.pre_edge_eV)
        li_profile(img, LOW, POS, GEOM, params)

    ours_profile()
    ours_full()
    t_prof = median_ms(ours_profile, 50)
    t_full = median_ms(ours_full, 30)
    print(f"insitem li_profile (bg fit + Li-K integration + profile), 330x2048: median {t_prof:.2f} ms (50 repeats)")
    print(f"insitem subtract_background (full image) + li_profile:          median {t_full:.2f} ms (30 repeats)")

    ll, li = make_lowloss_pair(np.random.default_rng(3))
    prof = li_profile(li, LOW_SIM, POS, GEOM, params, lowloss=(ll, LL_SIM))
    t_dec = median_ms(lambda: li_profile(li, LOW_SIM, POS, GEOM, params, lowloss=(ll, LL_SIM)), 9)
    print(f"insitem li_profile with low-loss splice + Fourier-log, 330x2048 x2: median {t_dec:.1f} ms (9 repeats),"
          f" parent level {prof.parent_level}")

    core = make_core(np.random.default_rng(2))
    ti_analysis(core, CORE, POS, GEOM)
    o_analysis(core, CORE, POS, GEOM)
    t_ti = median_ms(lambda: ti_analysis(core, CORE, POS, GEOM), 7)
    t_o = median_ms(lambda: o_analysis(core, CORE, POS, GEOM), 7)
    print(f"insitem ti_analysis (f3 fit, shift, L2/L3), 330x2048:           median {t_ti:.1f} ms (7 repeats)")
    print(f"insitem o_analysis (t/lambda + FWHM estimate, peak-b fits):     median {t_o:.1f} ms (7 repeats)")

    logging.disable(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import exspy

        s = exspy.signals.EELSSpectrum(img.astype(float))
        ax = s.axes_manager.signal_axes[0]
        ax.offset, ax.scale, ax.units, ax.is_binned = LOW.offset_eV, LOW.scale_eV, "eV", True

        def theirs() -> None:
            s.remove_background(signal_range=(44.0, 50.0), background_type="PowerLaw", fast=True, show_progressbar=False)

        theirs()
        t_ex = median_ms(theirs, 7)
    print(f"exspy remove_background(PowerLaw, fast=True), 330x2048:         median {t_ex:.2f} ms (7 repeats)")
    print(f"ratio exspy / insitem full: {t_ex / t_full:.1f}x; exspy / insitem li_profile: {t_ex / t_prof:.1f}x")


if __name__ == "__main__":
    main()
