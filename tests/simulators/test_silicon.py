"""Si nanoparticle cluster (simulators/silicon.py): the A.1 volume law, the two-phase front and what
the slit sees (physics-seed-systems.md A, seed [P3])."""

from __future__ import annotations

import math

import numpy as np
import pytest

from insitem.simulators.sample import AVOGADRO
from insitem.simulators.silicon import (
    SiCluster,
    SiClusterParameters,
    li_si_density_g_cm3,
    li_si_plasmon_eV,
    molar_volume_m3_per_mol_si,
    volume_ratio,
)
from insitem.simulators.transport import FARADAY_C_PER_MOL

Y = np.arange(-200e-9, 1200e-9, 2e-9)


def hold(cluster: SiCluster, bias_V: float, duration_s: float, dt_s: float = 1.0) -> SiCluster:
    for _ in range(int(round(duration_s / dt_s))):
        cluster.advance(dt_s, bias_V, 1e-6)
    return cluster


def test_volume_law_matches_the_li15si4_cell() -> None:
    # A.1: V/V0 = 3.81 at x = 3.75 (+281 %), rho 2.33 -> 1.18 g/cm^3, linear factor 1.56
    assert volume_ratio(3.75) == pytest.approx(3.81, abs=0.01)
    assert volume_ratio(3.75) ** (1 / 3) == pytest.approx(1.56, abs=0.005)
    assert li_si_density_g_cm3(0.0) == pytest.approx(2.33, abs=0.005)
    assert li_si_density_g_cm3(3.75) == pytest.approx(1.18, abs=0.01)
    # A.4 / table F: Ep 16.7 eV at x = 0, 12.2 eV at 3.75
    assert li_si_plasmon_eV(0.0) == pytest.approx(16.7, abs=0.05)
    assert li_si_plasmon_eV(3.75) == pytest.approx(12.2, abs=0.05)


@pytest.mark.parametrize("bias_V", [0.0, -0.1, -0.15, -0.18])
def test_nothing_happens_above_minus_0p2_volt(bias_V: float) -> None:
    c = hold(SiCluster(), bias_V, 120.0)
    assert c.cluster_width_m == pytest.approx(3 * 100e-9, rel=1e-12)
    assert c.li_mol == 0.0


def test_at_minus_0p2_volt_the_cluster_swells_to_the_shell_volume_and_slows() -> None:
    p = SiClusterParameters()
    c = SiCluster(p)
    w0 = c.cluster_width_m
    widths = [w0]
    for _ in range(600):
        c.advance(1.0, -0.2, 1e-6)
        widths.append(c.cluster_width_m)
    w = np.array(widths)
    final_expected = w0 * volume_ratio(p.shell_x) ** (1 / 3)
    assert w[-1] == pytest.approx(final_expected, rel=0.01)
    assert np.all(np.diff(w) >= 0)
    # most of the growth early ([P3]: rapid at first, slowed after ~40 s)
    assert (w[40] - w0) / (w[-1] - w0) > 0.5
    rate_early = (w[10] - w[0]) / 10
    rate_late = (w[200] - w[100]) / 100
    assert rate_late < 0.3 * rate_early


def test_particles_behind_the_first_lithiate_later_through_their_neighbours() -> None:
    c = hold(SiCluster(), -0.2, 30.0)
    xi = c.lithiated_fraction
    assert xi[0] > xi[1] > xi[2] > 0  # Li reaches particles 2 and 3 only through particle 1 ([P3])


def test_transport_limits_the_front() -> None:
    slow = hold(SiCluster(SiClusterParameters(D_m2_per_s=5e-17)), -0.2, 30.0)
    fast = hold(SiCluster(SiClusterParameters(D_m2_per_s=5e-14)), -0.2, 30.0)
    base = hold(SiCluster(), -0.2, 30.0)
    assert slow.li_mol < base.li_mol < fast.li_mol


def test_faradays_law_and_the_sign_of_the_current() -> None:
    c = SiCluster(SiClusterParameters(leakage_resistance_ohm=1e30, stray_capacitance_F=0.0))
    q = 0.0
    for _ in range(60):
        step = c.advance(1.0, -0.2, 1e-6)
        q += step.charge_C
    assert q < 0  # lithiation is cathodic at the Si
    assert -q == pytest.approx(c.li_mol * FARADAY_C_PER_MOL, rel=1e-9)
    # A.2: one 100 nm particle to x = 3.75 holds 15.7 pC
    r0 = 50e-9
    q_full = 3.75 * (4 / 3) * math.pi * r0**3 / molar_volume_m3_per_mol_si(0.0) * FARADAY_C_PER_MOL
    assert q_full == pytest.approx(15.7e-12, rel=0.02)


def test_si_atoms_are_conserved_along_the_slit_and_li_has_one_concentration() -> None:
    def si_per_particle(cl: SiCluster, col) -> np.ndarray:  # noqa: ANN001
        # across the slit each particle occupies a pitch 2R: Si atoms per particle ∝ 2R ∫ n_Si dy
        si = col.areal_density_per_m2["Si"]
        out = []
        for c0, R in zip(cl.centres_m, cl.outer_radius_m):
            sel = (Y >= c0 - R) & (Y < c0 + R)
            out.append(2 * R * si[sel].sum())
        return np.array(out)

    c = SiCluster()
    n0 = si_per_particle(c, c.column_state(Y))
    hold(c, -0.2, 30.0)
    col = c.column_state(Y)
    assert np.allclose(si_per_particle(c, col), n0, rtol=0.02)
    # shell rows: Li per m^3 = x_s N_A / Vm(x_s); pure-shell rows sit at the particle rims
    x = c.params.shell_x
    shell_only = (col.phase_path_m[:, 3] > 0) & (col.phase_path_m[:, 2] == 0)
    assert shell_only.any()
    assert np.allclose(col.li_per_m3[shell_only], x * AVOGADRO / molar_volume_m3_per_mol_si(x), rtol=1e-9)
    # and the column's density follows: rho(x_s), lower than c-Si
    assert np.allclose(col.density_g_cm3[shell_only], li_si_density_g_cm3(x), rtol=1e-9)


def test_the_column_sees_electrolyte_particles_and_vacuum() -> None:
    c = SiCluster()
    col = c.column_state(np.array([-50e-9, 50e-9, 2000e-9]))
    names = col.layer_names
    assert [names[i] for i in col.layer_index] == ["Li2O", "c-Si", "vacuum"]
    assert col.thickness_m[2] == 0.0 and col.t_over_lambda[2] == 0.0
    assert col.plasmon_energy_eV[0] == pytest.approx(22.6)
    assert col.plasmon_energy_eV[1] == pytest.approx(16.7)
    hold(c, -0.2, 600.0)
    col = c.column_state(np.array([50e-9]))
    assert names[int(col.layer_index[0])].startswith("a-Li")
    assert col.plasmon_energy_eV[0] == pytest.approx(li_si_plasmon_eV(c.params.shell_x), abs=0.01)


def test_state_round_trip() -> None:
    c = hold(SiCluster(), -0.2, 20.0)
    d = SiCluster.from_state_dict(c.state_dict())
    assert np.array_equal(d.core_radius_m, c.core_radius_m)
    assert d.charge_passed_C == c.charge_passed_C
    hold(c, -0.2, 10.0)
    hold(d, -0.2, 10.0)
    assert d.cluster_width_m == c.cluster_width_m
