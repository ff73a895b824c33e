"""Sample layers and column state (physics.md §1.3, §1.4, §1.8, §3.5, §7 check 9)."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from insitem.simulators.sample import (
    LASGTP,
    Sample,
    SampleParameters,
    free_electron_plasmon_eV,
    o_o_distance_nm,
    ti3_fraction,
)


@pytest.fixture(scope="module")
def sample() -> Sample:
    return Sample(SampleParameters.lasgtp_cell())


def test_free_electron_plasmon_energy_of_latp_is_24_7_eV():
    latp = {"Li": 1.3, "Al": 0.3, "Ti": 1.7, "P": 3.0, "O": 12.0}
    assert free_electron_plasmon_eV(latp, 2.94) == pytest.approx(24.7, abs=0.05)
    # Si/Ge substitution changes Ep by well under 1 eV (§1.3)
    assert abs(free_electron_plasmon_eV(LASGTP.formula, 2.94) - 24.7) < 1.0


def test_layers_along_y_with_metal_before_the_pt_interface(sample):
    y = np.array([-450e-9, -100e-9, 100e-9, 399e-9, 401e-9, 2e-6])
    names = [sample.layer_names[i] for i in sample.layer_index(y)]
    assert names == ["W", "Pt", "electrode", "electrode", "LASGTP", "LASGTP"]


def test_areal_densities_of_100_nm_electrolyte_match_section_1_5(sample):
    col = sample.column_state(np.array([1e-6]), 1.0)
    n = {el: v[0] * 1e-4 for el, v in col.areal_density_per_m2.items()}  # atoms/cm^2
    assert n["O"] == pytest.approx(5.54e17, rel=0.03)  # LATP value of §1.5; LASGTP formula within 3 %
    assert n["Ti"] == pytest.approx(7.85e16 * 1.4 / 1.7, rel=0.03)
    assert n["Pt"] == 0.0 and n["W"] == 0.0
    assert col.t_over_lambda[0] == pytest.approx(100 / 194.9, rel=1e-3)  # §1.4 table, beta 10 mrad
    assert col.t_over_lambda_all[0] == pytest.approx(100 / 168.8, rel=1e-3)


def test_li_areal_density_scales_with_c_over_c0_only_in_li_hosts(sample):
    y = np.array([1e-6, 1e-6, -100e-9])
    col = sample.column_state(y, np.array([1.0, 8.5, 8.5]))
    li = col.areal_density_per_m2["Li"]
    assert li[1] / li[0] == pytest.approx(8.5, rel=1e-12)
    assert li[2] == 0.0  # Pt holds no Li whatever the transport says
    assert col.areal_density_per_m2["Ti"][1] == col.areal_density_per_m2["Ti"][0]  # Ti, O independent of Li
    assert col.density_g_cm3[1] > col.density_g_cm3[0]  # added Li mass


def test_ti3_fraction_follows_the_electrons_inserted():
    """Each Li beyond the parent's brings one electron (1.5 Li per formula unit at c0): the first
    7.5 per formula unit go to O (Ti stays 4+ up to 6 c0, [Y14]); each further one reduces one of
    the 1.4 Ti per formula unit, so f3 = 1 at 6 + 1.4/1.5 = 6.93 c0; linear in between."""
    f = ti3_fraction(np.array([1.0, 5.0, 6.0, 6.0 + 0.7 / 1.5, 6.0 + 1.4 / 1.5, 8.5]))
    np.testing.assert_allclose(f, [0.0, 0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-12)
    c = np.linspace(6.0, 6.9, 10)
    n_ti3 = 1.4 * ti3_fraction(c)
    np.testing.assert_allclose(np.diff(n_ti3), 1.5 * np.diff(c), rtol=1e-9)  # one Ti3+ per electron


def test_o_o_distance_mapping_endpoints_and_peak_b_law():
    R = o_o_distance_nm(np.array([0.5, 1.0, 4.75, 8.5, 10.0]))
    np.testing.assert_allclose(R, [0.280, 0.280, 0.295, 0.310, 0.310], atol=1e-12)
    # §7 check 5: peak b at R = 0.310 nm
    assert 529.0 + 2.820 / 0.310**2 == pytest.approx(558.34, abs=0.005)


def test_prepeak_fades_and_f3_is_zero_without_titanium(sample):
    col = sample.column_state(np.array([1e-6, 1e-6, -100e-9]), np.array([1.0, 8.5, 8.5]))
    assert col.prepeak_amplitude[0] == 1.0
    assert col.prepeak_amplitude[1] == pytest.approx(1 - 0.1 * 7.5)
    assert col.f_ti3[2] == 0.0  # Pt row


def test_check_9_reference_profile_crosses_6_c0_at_160_nm(sample):
    y = np.linspace(0, 600e-9, 60001)
    c = sample.reference_li_ratio(y)
    assert c[0] == pytest.approx(8.5)
    y6 = y[np.argmin(np.abs(c - 6.0))]
    assert y6 == pytest.approx(160e-9, abs=2e-9)


def test_presets_build_and_config_is_strict():
    for params in (SampleParameters.lfp_lagp_lvp_lamella(), SampleParameters.si_nanoparticles()):
        s = Sample(params)
        y = s.pixel_positions_m(50, 20e-9, -500e-9)
        col = s.column_state(y, 2.0)
        assert np.all(col.t_over_lambda > 0) and np.all(np.isfinite(col.t_over_lambda))
    si = Sample(SampleParameters.si_nanoparticles())
    col = si.column_state(np.array([50e-9]), 37.5)  # Li3.75Si
    assert col.areal_density_per_m2["Li"][0] / col.areal_density_per_m2["Si"][0] == pytest.approx(3.75)
    with pytest.raises(ValidationError):
        SampleParameters.lasgtp_cell(thickness_nm=100)
    with pytest.raises(ValidationError):
        SampleParameters(layers=SampleParameters.lasgtp_cell().layers, origin_layer="nope")
