"""Working set of the CCD detector model (issue 4: peak RSS <= 300 MB for a dry run).

Measured with tracemalloc, which sees numpy's array buffers: a frame of a new expected image may
hold the PSF-smoothed mean and the padded fluctuation field (two area-sized float32 arrays) but
no further area-sized temporaries, and an image seen once keeps neither between frames. The
gain reference, exposed in row bands, never needs a sensor-sized float64 array.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from insitem.simulators.detector import CCDDetector, DetectorParameters

SHAPE = (768, 512)
AREA = (24, 0, 744, 512)  # 720 rows: 120 binned rows of 6
AREA_BYTES = (AREA[2] - AREA[0]) * (AREA[3] - AREA[1]) * 4  # one float32 array over the area


def sr_image(scale: float) -> np.ndarray:
    """Expected e/px over the area: 120 positions, each repeated over 6 CCD rows (SR-EELS)."""
    e = np.linspace(35.0, 85.0, AREA[3] - AREA[1])
    pos = 1.0 + 0.5 * np.sin(np.arange(120) / 9.0)
    spec = 2.0e3 * (e / 35.0) ** -3.5 + 0.5  # well above and below exact_below_e: both draws
    return np.repeat(pos[:, None] * spec[None, :] * scale, 6, axis=0).astype(np.float32)


def traced(fn) -> tuple[int, int]:
    """(memory still held after fn, peak during fn), bytes above the level before."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        fn()
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return after - before, peak - before


def test_a_new_image_costs_at_most_two_area_arrays_and_keeps_none() -> None:
    det = CCDDetector(DetectorParameters(shape_px=SHAPE), rng=3)
    det.expose(sr_image(1.0), 7.5, binning=(6, 1), readout_area=AREA)  # read-out maps cached
    img = sr_image(1.1)
    frames = []
    held, peak = traced(lambda: frames.append(det.expose(img, 7.5, binning=(6, 1), readout_area=AREA)))
    # mean + padded fluctuation field + run mask, binned frame and row-block temporaries
    # (2.8 x); sensor-sized temporaries per frame peaked at 4.8 x (docs/performance/dry-run.md)
    assert peak < 3.3 * AREA_BYTES
    # only the binned frame and the row-compact cache (distinct rows, 1/6 of the area) stay:
    # 0.42 x, where keeping the expected image, its noise amplitudes and mean held 3.1 x
    assert held < 0.6 * AREA_BYTES
    assert frames[0].data.shape == (120, 512)


def test_a_repeated_image_is_cached_and_gives_the_same_mean() -> None:
    det = CCDDetector(DetectorParameters(shape_px=SHAPE), rng=3)
    img = sr_image(1.0)
    first = det.mean_counts(img, 7.5, binning=(6, 1), readout_area=AREA)
    det.expose(img, 7.5, binning=(6, 1), readout_area=AREA)  # seen once: arrays released
    det.expose(img, 7.5, binning=(6, 1), readout_area=AREA)  # seen again: rebuilt and kept
    held, peak = traced(lambda: det.expose(img, 7.5, binning=(6, 1), readout_area=AREA))
    assert peak < 0.8 * AREA_BYTES  # cache hit: no new mean (1 x), fluctuation buffer reused (1 x)
    np.testing.assert_array_equal(det.mean_counts(img, 7.5, binning=(6, 1), readout_area=AREA), first)


@pytest.mark.parametrize("band_rows", [128, 1 << 20])
def test_gain_reference_in_bands_meets_the_residual_with_a_band_sized_working_set(
    band_rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import insitem.simulators.detector as detector

    monkeypatch.setattr(detector, "_GAIN_REF_BAND_ROWS", band_rows)
    params = DetectorParameters(shape_px=(1024, 512))
    det = CCDDetector(params, rng=12)
    detector._gauss_table()  # the sampler's table is made once per process: not part of the reference
    refs = []
    held, peak = traced(lambda: refs.append(det.gain_reference()))
    ref = refs[0]
    assert ref.dtype == np.float32 and ref.shape == params.shape_px
    assert ref.mean() == pytest.approx(1.0, abs=1e-6)
    assert np.std(ref / det.gain_map) == pytest.approx(params.gain_ref_residual, rel=0.1)
    sensor_f32 = 1024 * 512 * 4
    assert held < 1.3 * sensor_f32  # the reference itself and nothing sensor-sized besides
    if band_rows == 128:  # eight bands: 2.4 x the reference's size at the peak
        assert peak < 3.5 * sensor_f32
    else:  # one band is the whole sensor: float64 sum of the flats, read-out maps, buffers (11 x)
        assert peak > 6 * sensor_f32
