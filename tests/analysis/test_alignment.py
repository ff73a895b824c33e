"""Energy alignment: common drift and per-row non-isochromaticity (physics.md §1.9)."""

from __future__ import annotations

import numpy as np
import pytest

from insitem.analysis import edge_onset, image_drift, row_shifts, shift_rows, xcorr_shift


@pytest.mark.parametrize("shift", [0.37, -1.23, 0.05, 2.0])
def test_image_drift_recovers_known_shift(synth, shift):
    """A noisy image drifted by `shift` against a noisy reference exposure: recovered to < 0.05 eV."""
    ref = synth.core_image(np.random.default_rng(1))
    img = synth.core_image(np.random.default_rng(2), shift_eV=shift)
    est = image_drift(img, ref, synth.CORE, (450.0, 545.0))
    assert abs(est - shift) < 0.05
    # recalibrating the axis makes a second measurement read zero
    assert abs(image_drift(img, ref, synth.CORE, (450.0, 545.0)) - shift) < 0.05
    assert synth.CORE.shifted(est).offset_eV == pytest.approx(synth.CORE.offset_eV - est)


def test_edge_onset_moves_with_the_spectrum(synth):
    ref = synth.core_image(None).sum(axis=0)
    img = synth.core_image(None, shift_eV=0.6).sum(axis=0)
    d = edge_onset(img, synth.CORE, (525.0, 536.0)) - edge_onset(ref, synth.CORE, (525.0, 536.0))
    assert abs(d - 0.6) < 0.05


def test_xcorr_sign_convention(synth):
    """shift > 0 means the spectrum's features sit above the reference's."""
    ref = synth.core_image(None)[200]
    up = synth.core_image(None, shift_eV=1.0)[200]
    assert float(xcorr_shift(up, ref, synth.CORE, (450.0, 545.0))) == pytest.approx(1.0, abs=0.02)


def test_row_shifts_find_and_remove_quadratic_non_isochromaticity(synth):
    """dE(y) = c1 (y - y0) + c2 (y - y0)^2, 0.3 eV peak to peak (§1.9), measured on O-K and undone.

    The rows near Pt change chemically (O pre-peak, peak b), so the fit uses rows beyond 600 nm
    only and the quadratic extrapolates to the rest.
    """
    y = np.arange(330)
    de = 0.3 * ((y - 165) / 165.0) ** 2 - 0.1 * (y - 165) / 165.0
    img = synth.core_image(np.random.default_rng(3), row_shift_eV=de)
    fit_rows = synth.truth().distance_m > 600e-9
    raw, model = row_shifts(img, synth.CORE, (522.0, 545.0), fit_rows=fit_rows, degree=2)
    truth = de - de[fit_rows].mean()
    assert np.max(np.abs(model - truth)[synth.truth().distance_m >= 0]) < 0.05
    fixed = shift_rows(img, model, synth.CORE)
    _, after = row_shifts(fixed, synth.CORE, (522.0, 545.0), fit_rows=fit_rows, degree=2)
    assert np.max(np.abs(after)) < 0.03


def test_shift_rows_conserves_counts_and_moves_features(synth):
    img = synth.core_image(None)[250:260]
    moved = shift_rows(img, 0.25, synth.CORE)  # 2.5 channels: each output is the mean of two inputs
    assert moved[:, 50:-50].sum() == pytest.approx(0.5 * (img[:, 52:-48].sum() + img[:, 53:-47].sum()), rel=1e-12)
    assert float(xcorr_shift(moved[0], img[0], synth.CORE, (450.0, 545.0))) == pytest.approx(-0.25, abs=0.02)
