"""LFP | LAGP | LVP FIB-lamella micro-battery ([P2], seed 003) as the world's cell and sample.

Electrical model (physics-seed-systems.md C.1-C.4), two two-phase electrodes in series with the
lamella's resistances, the stray capacitance and leakage in parallel at the terminals::

    V = E_pos - E_neg + i R_tot
    E_pos = U_LFP(xi_p) + (2/f) asinh(i / (2 i0_p))                    LiFePO4 -> FePO4 (charge)
    E_neg = U_LVP(xi_n) - (2/f) asinh(i_LVP / (2 i0_n))                Li3V2(PO4)3 -> Li5V2(PO4)3 (charge)
    i = i_LVP + i_red,  i_red = i_red0 (n_red/n_red0) [exp(alpha_r f (E_red - E_neg)) - 1]+ / norm   LAGP reduction (B.3)
    i_meas = i + V/R_leak + C_stray dV/dt + beam_on (delta_SE I_hit + V I_beam/(I_ref R_RIC))   (C.4)

U_LFP = 3.43 V, U_LVP = 1.75 V vs Li (B.1 [est], B.2 [S:JIAN14]) are flat plateaus with Langmuir tails
of width RT/F over theta_t = 0.02 at the ends (B.1 [est]); xi_p is the FePO4 fraction of the LFP
electrode, xi_n the V3+ -> V2+ fraction of the LVP electrode; capacities from the electrode volumes of
C.1. R_tot = R_SE + R_composite + R_contact: R_SE = L/(sigma A) with sigma = 5e-5 S/cm [S:WIKI-LAGP]
(8e8 ohm [derived]), the composites 2 R_SE (C.1: 1-3 x [est]) and the point contacts ASR/A_int with
ASR = 1e4 ohm cm^2 over A_int = 50 A (8e9 ohm, C.1 ranges 1e3-1e5 ohm cm^2 and 10-100 A [est]).
With ~1e10 ohm in series the charge that would make the LFP/LVP wave near 1.7 V cannot pass before
5 V (C.2): the CV is a resistor-like line with a little hysteresis, "no clear electrochemical activity"
[P2] *because of* the polarisation; with R_tot lowered to ~1e8 ohm the plateau peaks appear
(tests/simulators/test_lamella.py proves both with the same model). LAGP is reduced at the LVP
interface wherever E_neg < 2.7 V vs Li (B.3 [est]): an irreversible current from a finite pool (the
LAGP within ``reduction_depth_m`` of the contact).

Sample along the slit (``column_state``): the thinned window at the LAGP | LFP interface [P2]: LAGP
for y < 0, LFP particles for y >= 0, 100 nm thick [P2]. The LFP rows are the two-phase mixture
(1 - xi_p) LiFePO4 + xi_p FePO4 by path length (isosbestic two-phase rule [S:LAF06]; the electrode
delithiates uniformly over the window, a named simplification). The LVP and its reduced LAGP are tens
of um away, outside the slit.

Simplifications (named): no LFP/LVP hysteresis, only the two couples that carry the first charge
(LFP extraction, LVP insertion), the reduction current lagged by one step, no double layers (their
~fA at 10 mV/s are below everything else, physics.md 3.6), output off = no current and no reaction.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy.optimize import brentq

from insitem.simulators.current_control import CurrentControlled
from insitem.simulators.sample import ColumnState, Material, column_from_phases
from insitem.simulators.transport import FARADAY_C_PER_MOL

GAS_CONSTANT_J_PER_MOL_K = 8.314462618
MAH_C = 3.6  # C per mAh

#: LiFePO4 3.60 g/cm^3 (B.1), Ep 25.5 eV width 10 eV (table F [est]), Fe M2,3 52.7 eV [S:XRDB]
LIFEPO4 = Material(name="LiFePO4", formula={"Li": 1, "Fe": 1, "P": 1, "O": 4}, density_g_cm3=3.60,
                   plasmon_energy_eV=25.5, plasmon_width_eV=10.0, shallow_edges=[("Fe M2,3", 52.7, 0.04)],
                   o_k_prepeak=0.0, valence_states={"Fe": 2})
#: FePO4 (heterosite) 3.68 g/cm^3 (B.1), Ep 26.0 eV (table F [est]); the 5 eV interband peak of Fe3+
#: ([S:MOR09], [P2]) is in ``valence_oscillators``: (E5 5.0 eV, G5 2.0 eV, 0.25 x the plasmon height [est])
FEPO4 = Material(name="FePO4", formula={"Fe": 1, "P": 1, "O": 4}, density_g_cm3=3.68,
                 plasmon_energy_eV=26.0, plasmon_width_eV=10.0, shallow_edges=[("Fe M2,3", 53.7, 0.04)],
                 valence_oscillators=[(5.0, 2.0, 0.25)], valence_states={"Fe": 3},
                 o_k_prepeak=0.0, o_k_fe3_prepeak=1.0)  # the single 528.5 eV pre-edge of Fe3+ (D.1), not the d0 Ti doublet
#: Li1.5Al0.5Ge1.5(PO4)3, 3.45 g/cm^3, Ep 25.7 eV width 8 (B.3); Ge M4,5 / M3 [S:XRDB], weights [est]
LAGP_PHASE = Material(name="LAGP", formula={"Li": 1.5, "Al": 0.5, "Ge": 1.5, "P": 3, "O": 12}, density_g_cm3=3.45,
                      plasmon_energy_eV=25.7, plasmon_width_eV=8.0,
                      shallow_edges=[("Ge M4,5", 29.2, 0.04), ("Ge M3", 120.8, 0.004)], o_k_prepeak=0.0)


def _electrode_charge_C(volume_m3: float, active_fraction: float, density_g_cm3: float, mAh_per_g: float) -> float:
    return volume_m3 * 1e6 * active_fraction * density_g_cm3 * mAh_per_g * MAH_C


class LamellaParameters(BaseModel):
    """The lamella's electrical model (sources in the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "lfp_lamella"
    temperature_K: float = Field(default=298.15, gt=0)
    U_pos_V: float = Field(default=3.43, description="LFP two-phase plateau vs Li (B.1) [est]")
    U_neg_V: float = Field(default=1.75, description="LVP V3+/V2+ insertion vs Li (B.2) [S:JIAN14]")
    tail_theta: float = Field(default=0.02, gt=0, lt=0.5, description="Langmuir tails at the plateau ends (B.1) [est]")
    Q_pos_C: float = Field(
        default=_electrode_charge_C(20e-6 * 5e-6 * 0.5e-6, 0.55, 3.60, 169.9),
        gt=0, description="LFP electrode 20 x 5 x 0.5 um^3, 55 vol% LFP, 169.9 mAh/g: 60.6 nC (C.1)")
    Q_neg_C: float = Field(
        default=_electrode_charge_C(20e-6 * 5e-6 * 0.5e-6, 0.55, 3.03, 131.5),
        gt=0, description="LVP electrode, same volume, 2 Li (131.5 mAh/g, 3.03 g/cm^3, B.2): 39.4 nC [derived]")
    xi_initial: float = Field(default=0.01, gt=0, lt=1, description="initial reacted fraction of each electrode [est]")
    R_electrolyte_ohm: float = Field(default=8e8, ge=0, description="R_SE = L/(sigma A), 10 um, 2.5e-8 cm^2, 5e-5 S/cm (C.1)")
    R_composite_ohm: float = Field(default=1.6e9, ge=0, description="both composite electrodes, 2 R_SE (C.1) [est]")
    R_contact_ohm: float = Field(default=8e9, ge=0, description="point contacts ASR 1e4 ohm cm^2 / (50 A) (C.1) [est]")
    i0_pos_A: float = Field(default=25e-12, gt=0, description="LFP exchange current: R_ct = RT/(F i0) = 1e9 ohm [est]")
    i0_neg_A: float = Field(default=25e-12, gt=0, description="LVP exchange current [est]")
    E_reduction_V: float = Field(default=2.7, description="LAGP reduction limit vs Li (B.3) [est]")
    reduction_current_A: float = Field(
        default=10e-12, ge=0, description="i_red with the full pool, driven by the reference overpotential [est]")
    reduction_reference_overpotential_V: float = Field(
        default=0.95, gt=0, description="E_red - E_neg at which i_red holds: the LVP plateau 1.75 V vs 2.7 V")
    reduction_charge_C: float = Field(
        default=6 * FARADAY_C_PER_MOL * 20e-9 * 1.25e-10 * 3.45e6 / 417.77,
        ge=0, description="6 Li per LAGP f.u. (B.3) over 20 nm [est] of the 1.25e-10 m^2 contact: 12 nC")
    reduction_alpha: float = Field(default=0.5, gt=0, le=1)
    stray_capacitance_F: float = Field(default=50e-12, ge=0, description="cables/holder (C.1) [est]")
    leakage_resistance_ohm: float = Field(default=1e12, gt=0, description="holder/chip leakage (C.1) [est]")
    se_yield: float = Field(default=0.03, ge=0, description="delta_SE, both surfaces, 300 kV (C.4) [est]")
    hit_fraction: float = Field(default=0.5, ge=0, le=1, description="beam on the connected electrode (C.4) [est]")
    R_RIC_ohm_at_1nA: float = Field(default=1e10, gt=0, description="radiation-induced conduction of LAGP (C.4) [est]")
    # the slit's window
    thickness_m: float = Field(default=100e-9, gt=0, description="thinned window [P2]")

    @property
    def R_total_ohm(self) -> float:
        return self.R_electrolyte_ohm + self.R_composite_ohm + self.R_contact_ohm

    @property
    def f_per_V(self) -> float:
        return FARADAY_C_PER_MOL / (GAS_CONSTANT_J_PER_MOL_K * self.temperature_K)


def plateau_tail_V(xi: float, theta_t: float, f: float) -> float:
    """Langmuir tails of a two-phase plateau: ~0 for theta_t << xi << 1 - theta_t, -> -inf at xi -> 0
    and +inf at xi -> 1 (written for the electrode whose potential rises with xi)."""
    return (math.log1p(theta_t / (1.0 - xi)) - math.log1p(theta_t / xi)) / f


class LamellaCell(CurrentControlled):
    """The micro-battery as the world's cell and its slit window as the world's sample."""

    transport = None

    def __init__(self, params: LamellaParameters | None = None) -> None:
        self.params = params or LamellaParameters()
        p = self.params
        self.xi_pos = p.xi_initial
        self.xi_neg = p.xi_initial
        self.reduction_left_C = p.reduction_charge_C
        self.phases: tuple[Material, ...] = (LAGP_PHASE, LIFEPO4, FEPO4)  # persistent: the EELS cache key
        self.time_s = 0.0
        self.charge_passed_C = 0.0
        self.reduction_charge_C = 0.0
        self.i_red_A = 0.0
        self.i_faradaic_A = 0.0
        self.V_term_V = self.open_circuit_V
        self.i_cell_A = 0.0
        self.last_tripped = False

    # ---------------------------------------------------------------------------- potentials
    def U_pos(self, xi: float) -> float:
        p = self.params
        return p.U_pos_V + plateau_tail_V(xi, p.tail_theta, p.f_per_V)

    def U_neg(self, xi: float) -> float:
        p = self.params
        return p.U_neg_V - plateau_tail_V(xi, p.tail_theta, p.f_per_V)

    @property
    def open_circuit_V(self) -> float:
        return self.U_pos(self.xi_pos) - self.U_neg(self.xi_neg)

    @property
    def E_neg_V(self) -> float:
        """Negative-electrode potential vs Li at the last step (equilibrium + overpotential)."""
        p = self.params
        i_lvp = self.i_faradaic_A - self.i_red_A
        return self.U_neg(self.xi_neg) - (2.0 / p.f_per_V) * math.asinh(i_lvp / (2.0 * p.i0_neg_A))

    def beam_current_A(self, beam_A: float, V: float) -> float:
        """SE emission from the irradiated electrode + radiation-induced conduction of LAGP (C.4)."""
        p = self.params
        if beam_A <= 0:
            return 0.0
        return p.se_yield * p.hit_fraction * beam_A + V * (beam_A / 1e-9) / p.R_RIC_ohm_at_1nA

    # ---------------------------------------------------------------------------- stepping
    def _solve(self, dt: float, V_app: float) -> tuple[float, float, float]:
        """Backward-Euler step: the cell current i with the end-of-step states (xi_p, xi_n)."""
        p = self.params
        f = p.f_per_V
        R = p.R_total_ohm
        i_red = self.i_red_A
        xp, xn = self.xi_pos, self.xi_neg

        def states(i: float) -> tuple[float, float]:
            return xp + i * dt / p.Q_pos_C, xn + (i - i_red) * dt / p.Q_neg_C

        def g(i: float) -> float:
            a, b = states(i)
            eta_p = (2.0 / f) * math.asinh(i / (2.0 * p.i0_pos_A))
            eta_n = (2.0 / f) * math.asinh((i - i_red) / (2.0 * p.i0_neg_A))
            return self.U_pos(a) + eta_p - (self.U_neg(b) - eta_n) + i * R - V_app

        # the states must stay inside (0, 1): bracket i accordingly
        eps = 1e-12
        lo = max(-xp * p.Q_pos_C / dt, -xn * p.Q_neg_C / dt + i_red) * (1 - 1e-9) + eps
        hi = min((1 - xp) * p.Q_pos_C / dt, (1 - xn) * p.Q_neg_C / dt + i_red) * (1 - 1e-9) - eps
        i_ohm = abs(V_app) / max(R, 1.0) + 1e-9
        lo, hi = max(lo, -10 * i_ohm - 1e-6), min(hi, 10 * i_ohm + 1e-6)
        glo, ghi = g(lo), g(hi)
        if glo >= 0:
            i = lo
        elif ghi <= 0:
            i = hi
        else:
            i = brentq(g, lo, hi, xtol=1e-18, rtol=1e-12, maxiter=200)
        a, b = states(i)
        return i, min(max(a, 1e-300), 1 - 1e-16), min(max(b, 1e-300), 1 - 1e-16)

    def advance(self, dt_s: float, applied_V: float | None, compliance_A: float, beam_current_A: float = 0.0) -> Any:
        from insitem.simulators.electrochemistry import CellStep

        if dt_s <= 0:
            raise ValueError("dt_s must be > 0")
        p = self.params
        V_old = self.V_term_V
        if applied_V is None:
            self.V_term_V = self.open_circuit_V
            self.i_cell_A = 0.0
            self.time_s += dt_s
            self.last_tripped = False
            return CellStep(0.0, self.V_term_V, False, 0.0)
        i, xp, xn = self._solve(dt_s, applied_V)
        self.xi_pos, self.xi_neg, self.i_faradaic_A = xp, xn, i
        # LAGP reduction at the LVP interface: from this step's E_neg, used in the next (lagged)
        red = 0.0
        if p.reduction_charge_C > 0 and self.reduction_left_C > 0:
            # irreversible, so zero above the limit: exp(a f (E_red - E)) - 1, normalised at the reference drive
            af = p.reduction_alpha * p.f_per_V
            x = af * (p.E_reduction_V - self.E_neg_V)
            drive = math.expm1(min(x, 50.0)) / math.expm1(af * p.reduction_reference_overpotential_V) if x > 0 else 0.0
            red = p.reduction_current_A * (self.reduction_left_C / p.reduction_charge_C) * drive
            red = min(red, self.reduction_left_C / dt_s)
        self.reduction_left_C -= red * dt_s
        self.reduction_charge_C += red * dt_s
        self.i_red_A = red
        V = applied_V
        i_meas = i + V / p.leakage_resistance_ohm + p.stray_capacitance_F * (V - V_old) / dt_s
        i_meas += self.beam_current_A(beam_current_A, V)
        tripped = abs(i_meas) > compliance_A
        if tripped:
            i_meas = math.copysign(compliance_A, i_meas)
        self.V_term_V = V
        self.i_cell_A = i_meas
        self.charge_passed_C += i_meas * dt_s
        self.time_s += dt_s
        self.last_tripped = tripped
        return CellStep(i_meas, V, tripped, i_meas * dt_s)

    # ---------------------------------------------------------------------------- sample
    def phase_paths_m(self, y_m: np.ndarray) -> np.ndarray:
        y = np.asarray(y_m, dtype=float)
        t = self.params.thickness_m
        L = np.zeros((y.size, 3))
        L[:, 0] = np.where(y < 0, t, 0.0)
        L[:, 1] = np.where(y >= 0, t * (1.0 - self.xi_pos), 0.0)
        L[:, 2] = np.where(y >= 0, t * self.xi_pos, 0.0)
        return L

    def column_state(self, y_m: np.ndarray, *, li_retained: float = 1.0, E0_eV: float = 300e3,
                     alpha_rad: float = 0.5e-3, beta_rad: float = 10e-3) -> ColumnState:
        return column_from_phases(y_m, self.phase_paths_m(y_m), self.phases, li_retained=li_retained, E0_eV=E0_eV,
                                  alpha_rad=alpha_rad, beta_rad=beta_rad)

    # ---------------------------------------------------------------------------- inspection
    def ground_truth(self) -> dict[str, float]:
        return {
            "time_s": self.time_s,
            "theta": self.xi_pos,  # FePO4 fraction of the LFP electrode
            "fepo4_fraction": self.xi_pos,
            "lvp_reacted_fraction": self.xi_neg,
            "lagp_reduction_charge_C": self.reduction_charge_C,
            "open_circuit_V": self.open_circuit_V,
            "charge_passed_C": self.charge_passed_C,
            "terminal_V": self.V_term_V,
            "R_total_ohm": self.params.R_total_ohm,
        }

    _STATE = ("xi_pos", "xi_neg", "reduction_left_C", "time_s", "charge_passed_C", "reduction_charge_C", "i_red_A",
              "i_faradaic_A", "V_term_V", "i_cell_A", "last_tripped")

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "lamella", "params": self.params.model_dump(), **{k: getattr(self, k) for k in self._STATE}}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> "LamellaCell":
        obj = cls(LamellaParameters.model_validate(state["params"]))
        for k in cls._STATE:
            setattr(obj, k, state[k])
        return obj
