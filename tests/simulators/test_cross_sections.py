"""Kinematics, hydrogenic cross sections and mean free paths (physics.md §1.1, §1.4, §1.5, §7 checks 2-3)."""

from __future__ import annotations

import numpy as np
import pytest

from insitem.simulators import cross_sections as xs


def test_kinematics_at_300_kV_match_section_1_1():
    k = xs.kinematics(300e3)
    assert k.gamma == pytest.approx(1.5871, abs=1e-4)
    assert k.beta2 == pytest.approx(0.6030, abs=1e-4)
    assert k.T_eV == pytest.approx(154.07e3, rel=1e-4)
    assert k.two_gamma_T_eV == pytest.approx(489.0e3, rel=1e-4)
    assert k.wavelength_m == pytest.approx(1.969e-12, rel=1e-3)


def test_theta_E_is_E_over_2_gamma_T_not_exspys_twice_larger_value():
    th = xs.theta_E_rad(np.array([60.0, 456.0, 532.0]), 300e3) * 1e3
    np.testing.assert_allclose(th, [0.123, 0.932, 1.088], atol=1e-3)


def test_check_3_iakoubovskii_mean_free_path_for_latp():
    assert xs.imfp_iakoubovskii_m(2.94, 300e3) * 1e9 == pytest.approx(168.8, abs=0.1)
    assert xs.imfp_angular_correction(2.94, 300e3, 0.5e-3, 10e-3) == pytest.approx(1.155, abs=1e-3)
    assert xs.imfp_m(2.94, 300e3, 0.5e-3, 10e-3) * 1e9 == pytest.approx(194.9, abs=0.1)


def test_mean_free_path_follows_table_1_4_with_collection_angle():
    lam = [xs.imfp_m(2.94, 300e3, 0.5e-3, b * 1e-3) * 1e9 for b in (2, 5, 20)]
    np.testing.assert_allclose(lam, [274.1, 220.9, 179.1], atol=0.2)


def test_check_2_oxygen_K_partial_cross_section():
    sigma_cm2 = xs.sigma_integrated("K", 8, 532.0, 30.0, 300e3, 10e-3) * 1e4
    assert sigma_cm2 == pytest.approx(4.86e-22, rel=0.02)


@pytest.mark.parametrize(
    "shell,Z,onset,beta_mrad,expected_barn_per_eV",
    [("K", 3, 55.0, 5, 2.30e3), ("K", 3, 55.0, 20, 2.61e3), ("K", 8, 532.0, 5, 12.3),
     ("K", 8, 532.0, 20, 21.4), ("L", 22, 456.0, 10, 56.2)],
)
def test_differential_cross_sections_match_table_1_5(shell, Z, onset, beta_mrad, expected_barn_per_eV):
    ds = xs.dsigma_dE(np.array([onset + 5.0]), shell, Z, onset, 300e3, beta_mrad * 1e-3, 0.0, 560.9 if shell == "L" else None)
    assert ds[0] * 1e28 == pytest.approx(expected_barn_per_eV, rel=0.015)


def test_cross_sections_agree_with_exspy_hydrogenic_gos():
    hg = pytest.importorskip("exspy._misc.eels.hydrogenic_gos")
    for subshell, shell, Z, onset, l1 in [("O_K", "K", 8, 532.0, None), ("Ti_L3", "L", 22, 456.0, 564.0)]:
        spline = hg.HydrogenicGOS(subshell).integrateq(onset, 10e-3, 300.0)
        E = np.array([onset + 20.0, onset + 45.0, onset + 90.0])
        ours = xs.dsigma_dE(E, shell, Z, onset, 300e3, 10e-3, 0.0, l1) * 1e28
        np.testing.assert_allclose(ours, spline(E), rtol=0.01)


def test_cross_section_is_zero_below_onset_and_grows_with_collection_angle():
    E = np.array([520.0, 540.0])
    small = xs.dsigma_dE(E, "K", 8, 529.0, 300e3, 5e-3)
    large = xs.dsigma_dE(E, "K", 8, 529.0, 300e3, 20e-3)
    assert small[0] == 0.0 and large[0] == 0.0
    assert large[1] > small[1] > 0


def test_effective_angle_reduces_to_beta_for_parallel_beam_and_shrinks_with_convergence():
    E = np.array([60.0, 532.0])
    np.testing.assert_allclose(xs.effective_collection_angle_rad(E, 300e3, 0.0, 10e-3), 10e-3)
    b = xs.effective_collection_angle_rad(E, 300e3, 1e-6, 10e-3)
    np.testing.assert_allclose(b, 10e-3, rtol=1e-3)
    # a convergent beam tilts part of the scattering out of the aperture: beta* < beta, more so for larger alpha
    b_half = xs.effective_collection_angle_rad(E, 300e3, 0.5e-3, 10e-3)
    b_five = xs.effective_collection_angle_rad(E, 300e3, 5e-3, 10e-3)
    assert np.all(b_five < b_half) and np.all(b_half < 10e-3) and np.all(b_five > 9e-3)


@pytest.mark.parametrize("shell, Z, onset, l1", [("L", 13, 72.5, 117.8), ("L", 22, 456.0, 560.9), ("K", 3, 55.0, None), ("K", 8, 528.0, None)])
def test_blockwise_evaluation_equals_one_block_across_the_gos_branch_points(monkeypatch, shell, Z, onset, l1):
    # 0.25 eV grid to 2 keV crosses the hydrogenic threshold (k^2 = 0) and, for L, the L1 onset
    E = 0.25 * np.arange(1, 8001)
    blocks = xs.dsigma_dE(E, shell, Z, onset, 300e3, 10e-3, 0.5e-3, l1)
    monkeypatch.setattr(xs, "_E_BLOCK", E.size)
    whole = xs.dsigma_dE(E, shell, Z, onset, 300e3, 10e-3, 0.5e-3, l1)
    assert np.any(blocks > 0)
    np.testing.assert_array_equal(blocks, whole)
