"""LFP | LAGP | LVP lamella micro-battery (simulators/lamella.py, physics-seed-systems.md C, seed [P2]).

The central claim: the CV shows no clear redox peaks *because of* the lamella's resistance. The same
model with the resistance lowered shows the plateau peaks near the LFP/LVP cell voltage, so the
polarisation is the reason, not an absence of redox."""

from __future__ import annotations

import numpy as np
import pytest

from insitem.analysis.voltammetry import redox_peaks
from insitem.simulators.lamella import LamellaCell, LamellaParameters

LOW_R = dict(R_electrolyte_ohm=1e8, R_composite_ohm=0.0, R_contact_ohm=0.0)


def cv(params: LamellaParameters, cycles: int = 1, noise_A: float = 0.0, seed: int = 0,
       step_V: float = 0.005, rate_V_s: float = 0.01) -> tuple[np.ndarray, np.ndarray, LamellaCell]:
    """0 -> 5 -> 0 V at 10 mV/s in 5 mV stairs, as the micro-battery-lagp protocol."""
    cell = LamellaCell(params)
    up = np.arange(0.0, 5.0 + 1e-9, step_V)
    v = np.tile(np.concatenate([up[1:], up[::-1][1:]]), cycles)
    t = np.arange(v.size + 1) * step_V / rate_V_s
    out = cell.advance_sweep(t, np.concatenate([[0.0], v]), 1e-7)
    i = out["current_A"] + np.random.default_rng(seed).normal(0.0, noise_A, v.size)
    return v, i, cell


def test_the_cell_voltage_sits_between_the_two_plateaus() -> None:
    p = LamellaParameters()
    cell = LamellaCell(p)
    assert cell.U_pos(0.5) == pytest.approx(3.43, abs=1e-3)
    assert cell.U_neg(0.5) == pytest.approx(1.75, abs=1e-3)
    # plateaus: flat over most of the composition range (within 2 RT/F between 10 % and 90 %)
    assert abs(cell.U_pos(0.9) - cell.U_pos(0.1)) < 2 * 0.0257
    assert abs(cell.U_neg(0.9) - cell.U_neg(0.1)) < 2 * 0.0257
    assert p.R_total_ohm == pytest.approx(8e8 + 1.6e9 + 8e9)
    assert p.Q_pos_C == pytest.approx(60.6e-9, rel=0.01)  # C.1


@pytest.mark.parametrize("noise_A", [0.0, 100e-12])
def test_no_redox_peaks_at_the_lamella_resistance_but_peaks_when_it_is_lowered(noise_A: float) -> None:
    v, i, cell = cv(LamellaParameters(), noise_A=noise_A)
    assert redox_peaks(v, i) == []
    assert cell.xi_pos > 0.3  # charge did pass: LFP was delithiated, the wave was only smeared out
    v, i, low = cv(LamellaParameters(**LOW_R), noise_A=noise_A)
    peaks = redox_peaks(v, i)
    anodic = [p for p in peaks if p.direction > 0]
    cathodic = [p for p in peaks if p.direction < 0]
    assert len(anodic) == 1 and len(cathodic) == 1
    e_cell = 3.43 - 1.75
    assert e_cell < anodic[0].potential_V < e_cell + 1.0  # the charge wave, a little iR past 1.7 V
    assert e_cell - 1.0 < cathodic[0].potential_V < e_cell  # and its discharge
    assert anodic[0].current_A > 3 * float(np.max(cv(LamellaParameters())[1]))


def test_the_resistance_sets_where_the_wave_goes() -> None:
    # the anodic wave moves up with R_tot and leaves the 0-5 V window between 6.4e9 and 1.04e10 ohm
    positions = []
    for r_contact in (0.0, 1e9, 4e9):
        v, i, _ = cv(LamellaParameters(R_contact_ohm=r_contact))
        (p,) = [x for x in redox_peaks(v, i) if x.direction > 0]
        positions.append(p.potential_V)
    assert positions == sorted(positions)
    assert positions[-1] > 4.0


def test_beam_on_adds_secondary_emission_and_radiation_induced_conduction() -> None:
    p = LamellaParameters()
    for V in (0.5, 3.0, 5.0):
        a, b = LamellaCell(p), LamellaCell(p)
        for cell in (a, b):
            cell.advance(1.0, V, 1e-7)
        off = a.advance(1.0, V, 1e-7).current_A
        on = b.advance(1.0, V, 1e-7, beam_current_A=0.2e-9).current_A
        expected = p.se_yield * p.hit_fraction * 0.2e-9 + V * 0.2 / p.R_RIC_ohm_at_1nA
        assert on - off == pytest.approx(expected, rel=1e-6)


def test_lagp_is_reduced_only_below_its_limit_at_the_lvp_side() -> None:
    def charged(**kw: float) -> LamellaCell:
        cell = LamellaCell(LamellaParameters(**kw))
        for _ in range(200):
            cell.advance(1.0, 3.0, 1e-7)  # charging: the LVP side sits near 1.75 V vs Li
        return cell

    cell = charged()
    assert cell.E_neg_V < cell.params.E_reduction_V
    assert cell.reduction_charge_C > 0.01 * cell.params.reduction_charge_C
    assert cell.reduction_charge_C <= cell.params.reduction_charge_C * (1 + 1e-12)  # a finite pool
    # with the limit below the LVP potential nothing is reduced
    stable = charged(E_reduction_V=1.0)
    assert stable.E_neg_V > 1.0
    assert stable.reduction_charge_C < 1e-6 * stable.params.reduction_charge_C


def test_faradays_law_for_the_lfp_electrode() -> None:
    p = LamellaParameters(leakage_resistance_ohm=1e30, stray_capacitance_F=0.0, reduction_charge_C=0.0)
    cell = LamellaCell(p)
    q = sum(cell.advance(0.5, 4.0, 1e-7).charge_C for _ in range(200))
    assert q == pytest.approx((cell.xi_pos - p.xi_initial) * p.Q_pos_C, rel=1e-6)


def test_the_lfp_rows_are_the_two_phase_mixture() -> None:
    cell = LamellaCell()
    y = np.array([-100e-9, 100e-9])
    li0 = cell.column_state(y).areal_density_per_m2["Li"].copy()
    for _ in range(300):
        cell.advance(1.0, 5.0, 1e-7)
    col = cell.column_state(y)
    f = cell.xi_pos
    assert f > 0.3
    assert col.phase_path_m[1, 2] == pytest.approx(f * cell.params.thickness_m)  # FePO4 path
    assert col.areal_density_per_m2["Li"][0] == pytest.approx(li0[0])  # LAGP rows keep their Li
    assert col.areal_density_per_m2["Li"][1] == pytest.approx(li0[1] * (1 - f) / (1 - cell.params.xi_initial), rel=1e-9)
    assert cell.phases[2].valence_oscillators  # the 5 eV peak belongs to FePO4 ([S:MOR09])


def test_state_round_trip() -> None:
    cell = LamellaCell()
    for _ in range(50):
        cell.advance(1.0, 4.0, 1e-7)
    copy = LamellaCell.from_state_dict(cell.state_dict())
    a = cell.advance(1.0, 4.5, 1e-7)
    b = copy.advance(1.0, 4.5, 1e-7)
    assert a.current_A == b.current_A
