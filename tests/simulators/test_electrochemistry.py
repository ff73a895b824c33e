"""Cell electrochemistry (physics.md §3.2-3.6, §5): thin-layer voltammetry (§7 check 7), sweep-rate
and iR laws, the [Y14] bulk cell's electrode growing over 50 cycles (decision 0020: peaks 1 < 10 < 50,
formation from kinetics, site bound, end profile), Faraday's law (§7 check 8), compliance,
galvanostatic control with a voltage limit, beam-induced current, open circuit, checkpoints."""

from __future__ import annotations

import math

import numpy as np
import pytest

from insitem.simulators.electrochemistry import Cell, CellParameters, isotherm_U_V
from insitem.simulators.transport import FARADAY_C_PER_MOL, crossing_m

F = FARADAY_C_PER_MOL
RT = 8.314462618 * 298.15
V_40MV_MIN = 0.040 / 60.0


def thin_layer_params(**kw: float) -> CellParameters:
    """Reversible thin layer: fast kinetics, no R_s, no C_dl, Omega = 0, constant Gamma, no formation."""
    values = dict(
        name="thin_layer", area_m2=0.2e-4, U_pos_V=3.93, E0_neg_V=2.35, series_resistance_ohm=0.0,
        R_ct_pos_ohm_m2=1e-8, R_ct_neg_ohm_m2=1e-8,
        C_dl_pos_F_per_m2=0.0, C_dl_neg_F_per_m2=0.0, leakage_resistance_ohm=None,
        gamma_mol_per_m2=1e-4, initial_open_circuit_V=1.3,
    )
    values.update(kw)
    return CellParameters(**values)


def run_cv(cell: Cell, v_lo: float, v_hi: float, rate_V_s: float, step_V: float, cycles: int = 1,
           compliance_A: float = 1e-3) -> list[tuple[np.ndarray, np.ndarray]]:
    """Triangular sweeps starting at v_lo; returns per cycle (midpoint voltage, mean current)."""
    n = int(round((v_hi - v_lo) / step_V))
    up = np.linspace(v_lo, v_hi, n + 1)
    wave = np.r_[up, up[::-1][1:]]
    t = np.arange(len(wave)) * (step_V / rate_V_s)
    out = []
    for _ in range(cycles):
        r = cell.advance_sweep(t, wave, compliance_A)
        out.append((0.5 * (wave[1:] + wave[:-1]), r["current_A"]))
    return out


def peaks(vm: np.ndarray, i: np.ndarray) -> tuple[float, float, float, float]:
    """(anodic peak V, anodic peak A, cathodic peak V, cathodic peak A) of one cycle."""
    half = len(i) // 2
    ka = int(np.argmax(i[:half]))
    kc = half + int(np.argmin(i[half:]))
    return vm[ka], i[ka], vm[kc], i[kc]


def fwhm_V(vm: np.ndarray, i: np.ndarray) -> float:
    """Full width at half maximum of the anodic (charge) peak on the forward sweep."""
    half = len(i) // 2
    v, y = vm[:half], i[:half]
    k = int(np.argmax(y))
    h = y[k] / 2
    lo = k
    while y[lo] > h:
        lo -= 1
    hi = k
    while y[hi] > h:
        hi += 1
    v_lo = v[lo] + (h - y[lo]) * (v[lo + 1] - v[lo]) / (y[lo + 1] - y[lo])
    v_hi = v[hi - 1] + (h - y[hi - 1]) * (v[hi] - v[hi - 1]) / (y[hi] - y[hi - 1])
    return v_hi - v_lo


def test_thin_layer_cv_peak_current_width_and_separation_check7() -> None:
    """§7 check 7, reversible surface-confined (thin-layer) wave, Langmuir isotherm:
    i_p = F^2 v A Gamma / (4RT), FWHM = 3.53 RT/F = 90.6 mV, zero peak separation (§3.3)."""
    p = thin_layer_params()
    cell = Cell(p)
    ((vm, i),) = run_cv(cell, 1.3, 1.9, V_40MV_MIN, 0.2e-3)
    va, ia, vc, ic = peaks(vm, i)
    ip_theory = F**2 * V_40MV_MIN * p.area_m2 * p.gamma_mol_per_m2 / (4 * RT)
    assert ia == pytest.approx(ip_theory, rel=0.02)
    assert -ic == pytest.approx(ip_theory, rel=0.02)
    assert fwhm_V(vm, i) == pytest.approx(0.0906, rel=0.03)
    assert abs(va - vc) < 1e-3
    assert va == pytest.approx(3.93 - 2.35, abs=1e-3)  # peak at U_pos - E0_neg = 1.58 V (§0)


def test_thin_layer_peak_current_proportional_to_sweep_rate() -> None:
    """Thin-layer diagnostic (§3.3): log i_p vs log v has slope 1 (diffusion would give 0.5)."""
    rates = np.array([10, 40, 160]) * 1e-3 / 60
    ips = []
    for v in rates:
        ((vm, i),) = run_cv(Cell(thin_layer_params(series_resistance_ohm=450.0)), 1.3, 1.9, v, 1e-3)
        ips.append(peaks(vm, i)[1])
    slope = np.polyfit(np.log(rates), np.log(ips), 1)[0]
    assert slope == pytest.approx(1.0, abs=0.05)


def test_peak_separation_grows_with_series_resistance() -> None:
    """Ohmic drop on a thin-layer wave: the separation grows with R. To first order in R each peak
    moves by 2 i_p R (i_p R from the iR offset plus i_p R from the interface sweep slowed by
    R di/dt: i(V) ~ i0(V - 2 R i0)), so dE_p -> 4 i_p R for i_p R << RT/F; §3.3 quotes 2 i_p R,
    which counts the offset only."""
    seps = []
    for R in (0.0, 2e3, 2e4):
        ((vm, i),) = run_cv(Cell(thin_layer_params(series_resistance_ohm=R)), 1.3, 1.9, V_40MV_MIN, 0.1e-3)
        va, ia, vc, ic = peaks(vm, i)
        seps.append(va - vc)
        if R == 2e3:
            assert va - vc == pytest.approx(2 * (ia - ic) * R, rel=0.1)
        if R > 0:
            assert va - vc > (ia - ic) * R  # at least the 2 i_p R of §3.3
    assert abs(seps[0]) < 2e-4
    assert seps[0] < seps[1] < seps[2]


@pytest.fixture(scope="module")
def bulk_run() -> dict:
    """The [Y14] protocol on a fresh cell: 50 CV cycles 0.5-2.5 V at 40 mV/min, 1 mV steps (dt =
    1.5 s); c/c0 recorded at both vertices of every cycle."""
    cell = Cell(CellParameters.lasgtp_bulk())
    n = 2000
    up = np.linspace(0.5, 2.5, n + 1)
    t = np.arange(n + 1) * 1.5
    cycles, c_max = [], 0.0
    for _ in range(50):
        a = cell.advance_sweep(t, up, 1e-3)
        c_max = max(c_max, float(cell.concentration_ratio(cell.transport.x_m).max()))
        b = cell.advance_sweep(t, up[::-1], 1e-3)
        c_max = max(c_max, float(cell.concentration_ratio(cell.transport.x_m).max()))
        vm = 0.5 * (np.r_[up, up[::-1][1:]][1:] + np.r_[up, up[::-1][1:]][:-1])
        cycles.append((vm, np.r_[a["current_A"], b["current_A"]]))
    return {"cell": cell, "cycles": cycles, "c_max": c_max}


def test_bulk_cv_peaks_near_1v6_grow_higher_and_sharper_1_10_50(bulk_run) -> None:
    """[Y14]: "As the negative electrodes grow with cycling, the charge current peak becomes higher
    and sharper in the CV" (cycles 1, 10, 50 plotted), peaks around 1.6 V. Here the growth comes
    out of the formed electrode (its reversible sites and exchange current follow it): peak
    heights 1 < 10 < 50 with no earlier cycle above cycle 50; the width falls from cycle 1 to 10
    and does not grow after, so height/width rises 1 < 10 < 50; charge and discharge peaks centre
    on U_pos - E0_neg = 1.58 V."""
    cycles = bulk_run["cycles"]
    pk = [peaks(*c) for c in cycles]
    ia = [p[1] for p in pk]
    assert ia[0] < ia[9] < ia[49]
    assert max(ia[:49]) <= ia[49]
    assert 1e-6 < ia[49] < 20e-6  # §3.6: 1-10 uA (estimate)
    w = [fwhm_V(*cycles[k]) for k in (0, 9, 49)]
    assert w[0] > w[1] and w[2] <= 1.05 * w[1]
    sharp = [ia[k] / wk for k, wk in zip((0, 9, 49), w)]
    assert sharp[0] < sharp[1] < sharp[2]
    for k in (9, 49):
        va, _, vc, _ = pk[k]
        assert 1.55 < va < 1.80 and 1.35 < vc < 1.60
        assert 0.5 * (va + vc) == pytest.approx(1.58, abs=0.03)


def test_formation_comes_from_kinetics_self_limits_and_has_no_cliff(bulk_run) -> None:
    """No prescribed formation charge: the decomposition that forms the electrode runs each charge,
    its charge per cycle falls as the surface sites fill (1 < 2 < ... net charge shrinking), and the
    current changes smoothly from stair to stair (no pool that empties within a few mV)."""
    cycles = bulk_run["cycles"]
    q = np.array([c[1].sum() * 1.5 for c in cycles])  # net charge per cycle = irreversible part
    assert np.all(q > 0) and np.all(np.diff(q) < 0)
    assert q[0] > 3 * q[49]
    for vm, i in cycles[:3] + cycles[-1:]:
        jump = np.max(np.abs(np.diff(i)))
        assert jump < 0.05 * np.max(np.abs(i))  # < 5 % of the peak per 1 mV stair


def test_concentration_stays_within_the_site_bound_over_50_cycles(bulk_run) -> None:
    """Sites bound the Li: the formed electrode holds at most u_max (the decomposition needs free
    surface sites), the reversible Li at most r_rev c0 on top: c/c0 <= 1 + u_max/c0 + r_rev at every
    vertex of every cycle, and the transport never had to clip."""
    cell = bulk_run["cell"]
    tp = cell.transport.params
    bound = 1 + tp.u_max_over_c0 + cell.params.reversible_sites_over_c0
    assert bulk_run["c_max"] <= bound + 1e-9
    assert cell.transport.u_mol_per_m3.max() <= tp.u_max_mol_per_m3 * (1 + 1e-9)
    assert cell.transport.clipped_mol_per_m2 < 1e-12 * cell.transport.excess_mol_per_m2


def test_bulk_charge_equals_inserted_li_check8(bulk_run) -> None:
    """§7 check 8: ∫ i_F dt / F = A (excess Li of the formed electrode + reversible Li) within 1e-6
    after 50 cycles; the SMU's ∫ i dt equals the Faradaic charge up to the double layers and the
    leakage (< 1 %)."""
    cell = bulk_run["cell"]
    gt = cell.ground_truth()
    tr = cell.transport
    q_f = gt["faradaic_reversible_charge_C"] + gt["formation_charge_C"]
    n0 = Cell(CellParameters.lasgtp_bulk()).n_rev_mol_per_m2
    li_mol = (tr.excess_mol_per_m2 + tr.outflow_mol_per_m2 + cell.n_rev_mol_per_m2 - n0) * cell.params.area_m2
    assert li_mol == pytest.approx(q_f / F, rel=1e-6)
    assert cell.charge_passed_C == pytest.approx(q_f, rel=0.01)


def test_bulk_50_cycles_end_profile_against_the_paper(bulk_run) -> None:
    """The end of cycling (discharged at 0.5 V), not fitted: ~8 c0 at Pt (paper 8.5), the 6 c0
    point at ~70 nm (paper ~160 nm: the surface-fed formed electrode has an erfc-like profile, the
    paper's is closer to a relaxed Gaussian), Li within ~350 nm (paper ~400 nm); numbers and their
    sensitivities in docs/decisions/0020-growing-electrode.md."""
    cell = bulk_run["cell"]
    tr = cell.transport
    c_pt = float(cell.concentration_ratio(0.0))
    assert 7.5 < c_pt < 8.5
    assert 50e-9 < crossing_m(tr, 6.0) < 100e-9
    x = tr.x_m
    c = cell.concentration_ratio(x)
    x5 = x[np.nonzero(c < 1 + 0.05 * (c_pt - 1))[0][0]]
    assert 300e-9 < x5 < 420e-9


def test_growth_follows_what_the_cell_did_not_a_counter() -> None:
    """An idle cell (open circuit) does not grow; one held charged grows without any cycling."""
    idle = Cell(CellParameters.lasgtp_bulk())
    for _ in range(100):
        idle.advance(60.0, None, 1e-3)
    assert idle.formed_thickness_m() < 1e-12  # Tafel at 1 V above E_form: nothing forms
    held = Cell(CellParameters.lasgtp_bulk())
    for _ in range(400):
        held.advance(15.0, 1.8, 1e-3)
    assert held.formed_thickness_m() > 5e-9
    assert held.gamma_mol_per_m2 > 2 * CellParameters.lasgtp_bulk().gamma_mol_per_m2


def test_compliance_caps_current_and_flags_trip() -> None:
    """SMU compliance: a 2 V step into the cell would draw ~mA through 450 ohm; with a 1 uA limit the
    SMU becomes a current source, |i| = 1 uA and the terminal voltage stays below the set level."""
    cell = Cell(CellParameters.lasgtp_bulk())
    step = cell.advance(1.0, 2.5, compliance_A=1e-6)
    assert step.compliance_tripped
    assert abs(step.current_A) == pytest.approx(1e-6, rel=1e-9)
    assert step.terminal_V < 2.5 - 0.1
    free = Cell(CellParameters.lasgtp_bulk()).advance(1.0, 2.5, compliance_A=1.0)
    assert not free.compliance_tripped and free.current_A > 1e-6
    assert free.terminal_V == pytest.approx(2.5, abs=1e-12)


def test_beam_induced_current_only_with_beam() -> None:
    """§3.6/§5: i_meas gains delta_eff x I_beam (0.05 default) only while the beam is on."""
    a, b = Cell(CellParameters.lfp_lamella()), Cell(CellParameters.lfp_lamella())
    for k in range(20):
        v = 0.01 * k
        sa = a.advance(1.0, v, 1e-7, beam_current_A=0.5e-9 if k >= 10 else 0.0)
        sb = b.advance(1.0, v, 1e-7)
        expected = 0.05 * 0.5e-9 if k >= 10 else 0.0
        assert sa.current_A - sb.current_A == pytest.approx(expected, abs=1e-18)


def test_open_circuit_gives_zero_current_and_relaxes() -> None:
    """Output off (high impedance): no current through the SMU; the double layers discharge through
    the Faradaic reactions so eta -> 0 and the terminal voltage relaxes to U_pos - U_neg(theta)."""
    cell = Cell(CellParameters.lasgtp_bulk(formation_rate_per_s=0.0))
    run_cv(cell, 0.5, 1.6, V_40MV_MIN, 1e-3)  # stop on the rising side of the wave
    cell.advance(1.5, 1.6, 1e-3)
    gt = cell.ground_truth()
    assert abs(gt["eta_pos_V"]) > 1e-3
    v_on = cell.V_term_V
    steps = [cell.advance(1.0, None, 1e-3) for _ in range(600)]
    assert all(s.current_A == 0.0 for s in steps)
    gt = cell.ground_truth()
    assert abs(gt["eta_pos_V"]) < 1e-4 and abs(gt["eta_neg_V"]) < 1e-4
    assert steps[-1].terminal_V == pytest.approx(cell.open_circuit_V, abs=1e-4)
    assert abs(steps[-1].terminal_V - v_on) > 1e-3


def test_leakage_discharges_the_cell_at_open_circuit() -> None:
    """With output off a leakage path (1e11 ohm, §3.6) self-discharges the lamella: Q = ∫V/R dt."""
    p = CellParameters.lfp_lamella(leakage_resistance_ohm=1e9)
    cell = Cell(p)
    for _ in range(100):
        cell.advance(1.0, 2.0, 1e-7)
    n0 = cell.n_rev_mol_per_m2
    for _ in range(100):
        cell.advance(1.0, None, 1e-7)
    assert cell.n_rev_mol_per_m2 < n0  # Li leaves the negative electrode through the leak


def test_lamella_shows_heavy_ir_polarisation() -> None:
    """[P2]/§3.6: at 10 mV/s through 1e8 ohm the peaks are ~nA and split by > 2 i_p R_s."""
    cell = Cell(CellParameters.lfp_lamella())
    ((vm, i),) = run_cv(cell, 0.0, 5.0, 0.01, 5e-3, compliance_A=1e-7)
    va, ia, vc, ic = peaks(vm, i)
    assert 0.05e-9 < ia < 5e-9
    assert va - vc > 1e8 * (ia - ic)


def test_si_hold_lithiates_by_diffusion_and_conserves_li() -> None:
    """[P3]: holding Si at -0.2 V against LiOx@Li lithiates it; the Faradaic current decays as
    the particle fills by diffusion (L^2/D = 20 s for 100 nm at 5e-12 cm^2/s), so after ~10 L^2/D
    the far side is near saturation; Faraday's law holds for the Li inside."""
    cell = Cell(CellParameters.si_nanoparticle())
    i_f = []
    for _ in range(400):
        cell.advance(0.5, -0.2, 1e-7)
        i_f.append(cell.i_rev_A)
    assert i_f[0] > i_f[10] > i_f[100] > 0
    tr = cell.transport
    li_per_si = tr.concentration_ratio(tr.x_m) - 1
    assert li_per_si[-1] > 0.9 * 3.75 * cell.theta
    assert cell.theta > 0.9
    q_f = cell.faradaic_rev_charge_C + cell.formation_charge_C
    assert tr.excess_mol_per_m2 * cell.params.area_m2 == pytest.approx(q_f / F, rel=1e-6)


def test_state_dict_round_trip_continues_identically() -> None:
    cell = Cell(CellParameters.lasgtp_bulk())
    run_cv(cell, 0.5, 1.7, V_40MV_MIN, 1e-3)
    twin = Cell.from_state_dict(cell.state_dict())
    for k in range(50):
        a = cell.advance(1.5, 0.5 + 0.001 * k, 1e-3)
        b = twin.advance(1.5, 0.5 + 0.001 * k, 1e-3)
        assert a == b
    assert np.array_equal(cell.transport.u_mol_per_m3, twin.transport.u_mol_per_m3)


def test_sweep_predictor_agrees_with_cold_start_steps() -> None:
    """advance_sweep starts each Newton from an extrapolation of the last steps; per-step advance
    starts from the present state. Both converge to the same state to the Newton tolerance: one bulk
    CV (formation peak included), then a stretch at a 2 uA compliance and an uneven time grid."""
    sweep_cell = Cell(CellParameters.lasgtp_bulk())
    step_cell = Cell(CellParameters.lasgtp_bulk())
    up = np.linspace(0.5, 2.5, 2001)
    v = np.r_[up, up[::-1][1:]]
    t = np.arange(len(v)) * 1.5
    v2 = np.r_[np.nan, np.linspace(0.5, 2.0, 200)]
    t2 = np.cumsum(np.r_[0.0, np.where(np.arange(200) % 3 == 0, 0.5, 2.0)])
    for tt, vv, comp in ((t, v, 1e-3), (t2, v2, 2e-6)):
        r = sweep_cell.advance_sweep(tt, vv, comp)
        steps = [step_cell.advance(float(dt), float(x), comp) for dt, x in zip(np.diff(tt), vv[1:])]
        cur = np.array([s.current_A for s in steps])
        assert np.array_equal(r["compliance_tripped"], [s.compliance_tripped for s in steps])
        assert np.max(np.abs(r["current_A"] - cur)) < 1e-12 + 1e-9 * np.max(np.abs(cur))
        assert np.max(np.abs(r["terminal_V"] - [s.terminal_V for s in steps])) < 1e-11
    assert r["compliance_tripped"].any() and not r["compliance_tripped"].all()
    assert sweep_cell.time_s == step_cell.time_s
    assert sweep_cell.throughput_C == pytest.approx(step_cell.throughput_C, rel=1e-10)


@pytest.mark.parametrize("overrides", [{}, {"formation_rate_per_s": 0.0}, {"transport": None, "formation_rate_per_s": 0.0}],
                         ids=["growing", "no-growth", "no-transport"])
def test_thin_layer_sweep_loop_is_bit_identical_to_solve_and_commit(overrides: dict) -> None:
    """The thin-layer sweep writes `_solve` and `_commit` out in one loop over locals; it must give
    the same numbers as the stairs through `_solve` and `_commit` (`_sweep_steps`), bit for bit:
    a CV with the formation peak, one starting at an odd time offset (transport batches that do not
    end on 15 s), a 2 uA compliance stretch on an uneven grid (trips through `_advance`), then the
    whole state, transport included."""
    params = CellParameters.lasgtp_bulk(**overrides)
    fast, steps = Cell(params), Cell(params)
    steps._sweep_thin_layer = steps._sweep_steps  # type: ignore[method-assign]
    up = np.linspace(0.5, 2.5, 2001)
    v = np.r_[up, up[::-1][1:]]
    t = np.arange(len(v)) * 1.5
    v2 = np.r_[np.nan, np.linspace(0.5, 2.0, 200)]
    t2 = np.cumsum(np.r_[0.0, np.where(np.arange(200) % 3 == 0, 0.5, 2.0)])
    tripped = 0
    for tt, vv, comp in ((t, v, 1e-3), (t[:700] + 1234.567, v[:700], 1e-3), (t2, v2, 2e-6)):
        a, b = fast.advance_sweep(tt, vv, comp), steps.advance_sweep(tt, vv, comp)
        assert a.keys() == b.keys()
        for key in a:
            assert np.array_equal(a[key], b[key]), key
        tripped += int(a["compliance_tripped"].sum())
    assert tripped > 0
    assert fast.state_dict() == steps.state_dict()
    assert (fast._theta_solved, fast.last_current_A, fast.last_tripped) == (steps._theta_solved, steps.last_current_A, steps.last_tripped)
    if fast._grows:
        assert fast._batch == steps._batch and fast._gamma == steps._gamma


def test_isotherm_omega_sharpens_wave() -> None:
    """Frumkin isotherm (§3.2): dU/dtheta at theta = 1/2 is -(RT/F)(4 - 2 Omega/RT); Omega > 0 flattens it."""
    f = F / RT
    h = 1e-6
    for w in (0.0, 1.0):
        slope = (isotherm_U_V(0.5 + h, 2.35, w, f) - isotherm_U_V(0.5 - h, 2.35, w, f)) / (2 * h)
        assert slope == pytest.approx(-(4 - 2 * w) / f, rel=1e-6)
    assert math.isfinite(isotherm_U_V(0.0, 2.35, 0.0, f))


# ---------------------------------------------------------------- current control (galvanostatic)


@pytest.fixture(scope="module")
def cycled_state() -> dict:
    """The [Y14] cell after its 50 CV cycles (discharged, electrode formed)."""
    from insitem.simulators.world import cycled_cell

    return cycled_cell(CellParameters.lasgtp_bulk()).state_dict()


def test_constant_current_charge_shows_the_1v6_plateau_and_conserves_charge(cycled_state) -> None:
    """Galvanostatic charge of the formed cell: the SMU passes exactly I t; Faraday's law puts
    (I t minus double-layer and leakage charge) / F of Li into the electrode; the voltage sits on
    the plateau near U_pos - E0_neg = 1.58 V while the reversible sites fill."""
    cell = Cell.from_state_dict(cycled_state)
    q0, n0, ex0 = cell.charge_passed_C, cell.n_rev_mol_per_m2, cell.transport.excess_mol_per_m2
    f0 = cell.faradaic_rev_charge_C + cell.formation_charge_C
    I, dt, n = 1e-6, 10.0, 150
    volts = []
    for _ in range(n):
        step = cell.advance_current(I, dt, voltage_limit_V=3.0)
        assert not step.compliance_tripped
        assert step.current_A == I
        volts.append(step.terminal_V)
    assert cell.charge_passed_C - q0 == pytest.approx(I * dt * n, rel=1e-12)
    gt = cell.ground_truth()
    q_f = gt["faradaic_reversible_charge_C"] + gt["formation_charge_C"] - f0
    li_mol = (cell.transport.excess_mol_per_m2 - ex0 + cell.n_rev_mol_per_m2 - n0) * cell.params.area_m2
    assert li_mol == pytest.approx(q_f / F, rel=1e-5)
    assert q_f == pytest.approx(I * dt * n, rel=0.02)  # the rest charged the double layers / leaked
    assert np.all(np.diff(volts) > -1e-6)  # charging never lowers the voltage
    assert 1.5 < float(np.median(volts)) < 1.75
    assert volts[-1] - volts[n // 4] < 0.15  # a plateau, not a capacitor ramp


def test_current_source_clamps_at_its_voltage_limit(cycled_state) -> None:
    """A SourceMeter in current mode at its voltage limit: the voltage stops at the limit and the
    current falls to what the cell takes there (below I, same sign); discharging, the limit is a
    floor. Until the limit the charge is I t."""
    cell = Cell.from_state_dict(cycled_state)
    I, dt, limit = 5e-6, 10.0, 1.75
    steps = [cell.advance_current(I, dt, voltage_limit_V=limit) for _ in range(400)]
    tripped = [s.compliance_tripped for s in steps]
    k = tripped.index(True)
    assert k > 10 and all(tripped[k:])
    assert all(s.current_A == I for s in steps[:k])
    assert all(s.terminal_V == pytest.approx(limit, abs=1e-9) for s in steps[k:])
    late = [s.current_A for s in steps[k:]]
    assert 0 < late[-1] < late[0] <= I  # the cell fills at the limit: the current decays
    down = [cell.advance_current(-I, dt, voltage_limit_V=1.0) for _ in range(600)]
    assert down[0].current_A == -I and not down[0].compliance_tripped
    assert down[-1].compliance_tripped and down[-1].terminal_V == pytest.approx(1.0, abs=1e-9)
    kd = [s.compliance_tripped for s in down].index(True)
    assert -I < down[kd].current_A < 0  # the cell still gives Li up at the floor, less than I
    assert abs(down[-1].current_A) < 0.01 * I  # ... until it is empty (leakage is what is left)


def test_world_hold_current_sources_until_t_end(cycled_state) -> None:
    """SimWorld.hold_current: constant current from now to t_end with a voltage limit; returns
    (V, I) at t_end; charge = I t while not limited; setting a voltage ends current sourcing."""
    from insitem.drivers.clock import VirtualClock
    from insitem.simulators.detector import CCDDetector, DetectorParameters
    from insitem.simulators.optics import MicroscopeState, OpticsParameters
    from insitem.simulators.sample import Sample
    from insitem.simulators.world import SimWorld

    clock = VirtualClock()
    world = SimWorld(clock, Cell.from_state_dict(cycled_state), Sample(),
                     MicroscopeState(OpticsParameters(), clock), CCDDetector(DetectorParameters()))
    q0 = world.cell.charge_passed_C
    V, i = world.hold_current(2e-6, 600.0, voltage_limit_V=3.0)
    assert i == 2e-6 and 1.4 < V < 1.8
    assert world.cell.charge_passed_C - q0 == pytest.approx(2e-6 * 600.0, rel=1e-12)
    clock.sleep_until(700.0)
    world.advance_to()  # the world keeps sourcing the current
    assert world.cell.charge_passed_C - q0 == pytest.approx(2e-6 * 700.0, rel=1e-12)
    V2, i2 = world.hold_current(1e-3, 1200.0, voltage_limit_V=1.65)
    assert V2 == pytest.approx(1.65, abs=1e-9) and 0 < i2 < 1e-3
    world.applied_V = 1.0
    assert world.applied_A is None and world.voltage_limit_V is None


@pytest.mark.slow
def test_in_situ_cv_of_the_cycled_cell_stays_within_bounds_and_ti3_follows_li() -> None:
    """The in-situ protocol's CV (1.0 -> 2.5 -> 0.5 -> 1.0 V at 40 mV/min) on the cell left by 50
    cycles: c/c0 stays within the site bound at every 50th stair; the charge swings the Li at Pt
    (reversible sites and further decomposition) and Li is conserved (Faraday); Ti3+ (from the
    electrons inserted) is more at the 2.5 V vertex than at the 0.5 V one."""
    from insitem.simulators.sample import Sample
    from insitem.simulators.world import cycled_cell

    cell = cycled_cell(CellParameters.lasgtp_bulk())
    tp = cell.transport.params
    bound = 1 + tp.u_max_over_c0 + cell.params.reversible_sites_over_c0
    x = cell.transport.x_m[cell.transport.x_m < 1e-6]
    f0 = cell.faradaic_rev_charge_C + cell.formation_charge_C
    li0 = cell.transport.excess_mol_per_m2 + cell.n_rev_mol_per_m2
    sample = Sample()
    legs = [np.linspace(1.0, 2.5, 1501), np.linspace(2.5, 0.5, 2001), np.linspace(0.5, 1.0, 501)]
    c_pt, ti3 = [], []
    for leg in legs:
        for k in range(0, len(leg) - 1, 50):
            seg = leg[k : k + 51]
            cell.advance_sweep(np.arange(len(seg)) * 1.5, seg, 1e-3)
            c = cell.concentration_ratio(x)
            assert c.max() <= bound + 1e-9
            c_pt.append(c[0])
        ti3.append(float(np.sum(sample.column_state(x, c).f_ti3)))
    # the swing at Pt: the reversible sites plus what the decomposition adds to the free surface sites
    assert 0.3 < max(c_pt) - min(c_pt) <= bound - c_pt[0] + cell.params.reversible_sites_over_c0
    assert ti3[0] > ti3[1]  # 2.5 V vertex vs 0.5 V vertex
    q_f = cell.faradaic_rev_charge_C + cell.formation_charge_C - f0
    li = cell.transport.excess_mol_per_m2 + cell.transport.outflow_mol_per_m2 + cell.n_rev_mol_per_m2 - li0
    assert li * cell.params.area_m2 == pytest.approx(q_f / F, rel=1e-6, abs=1e-15)


def test_newton_stopping_after_a_quadratically_small_step_matches_the_strict_tolerance(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cell's Newton stops after a step below `_NEWTON_STEP_V` / `_NEWTON_STEP_THETA` (1e-8):
    quadratic convergence puts the state within the strict tolerance (steps below 1e-11 V and
    1e-13 in theta). A bulk CV with the formation peak, then an uneven grid at a 2 uA compliance,
    run both ways: terminal voltages within 1e-11 V, currents within 1e-12 A + 1e-9 relative, the
    charges and the transport's Li within 1e-9 relative."""
    import insitem.simulators.electrochemistry as ec

    up = np.linspace(0.5, 2.5, 2001)
    v = np.r_[up, up[::-1][1:]]
    t = np.arange(len(v)) * 1.5
    v2 = np.r_[np.nan, np.linspace(0.5, 2.0, 200)]
    t2 = np.cumsum(np.r_[0.0, np.where(np.arange(200) % 3 == 0, 0.5, 2.0)])
    runs = []
    for tol in ((ec._NEWTON_STEP_V, ec._NEWTON_STEP_THETA), (1e-11, 1e-13)):
        monkeypatch.setattr(ec, "_NEWTON_STEP_V", tol[0])
        monkeypatch.setattr(ec, "_NEWTON_STEP_THETA", tol[1])
        cell = Cell(CellParameters.lasgtp_bulk())
        out = [cell.advance_sweep(tt, vv, comp) for tt, vv, comp in ((t, v, 1e-3), (t2, v2, 2e-6))]
        cell.sync_transport()
        runs.append((out, cell))
    (fast, a), (strict, b) = runs
    for r, s in zip(fast, strict):
        assert np.max(np.abs(r["terminal_V"] - s["terminal_V"])) < 1e-11
        # as between the sweep's predictor and cold starts (test_sweep_predictor_agrees_with_cold_start_steps)
        assert np.max(np.abs(r["current_A"] - s["current_A"])) < 1e-12 + 1e-9 * np.max(np.abs(s["current_A"]))
        assert np.array_equal(r["compliance_tripped"], s["compliance_tripped"])
    assert fast[1]["compliance_tripped"].any()
    for name in ("formation_charge_C", "faradaic_rev_charge_C", "throughput_C", "charge_passed_C", "n_rev_mol_per_m2"):
        assert getattr(a, name) == pytest.approx(getattr(b, name), rel=1e-9), name
    assert a.transport is not None and b.transport is not None
    np.testing.assert_allclose(a.transport._u, b.transport._u, rtol=1e-9, atol=1e-12 * float(np.max(b.transport._u)))
