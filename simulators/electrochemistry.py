"""Two-electrode all-solid-state cell for the simulated world (physics.md §3, §5, §6.3).

What the potentiostat sees of the battery: a positive electrode (LiCoO2, LFP or Li metal) with a
constant potential U_pos, a negative electrode with a Frumkin insertion isotherm, Butler-Volmer
kinetics at both interfaces, their double layers, the electrolyte series resistance, and parallel
paths at the terminals (leakage, stray capacitance, beam-induced current)::

    V_term = E_pos - E_neg + i_cell R_s                                    §3.2
    E_pos  = U_pos + eta_pos,   E_neg = U_neg(theta) - eta_neg             (eta > 0 on charge)
    i_cell = i_F,pos(eta_pos) + C_pos A dE_pos/dt
           = i_rev(E_neg, theta) + i_form(E_neg) - C_neg A dE_neg/dt
    U_neg(theta) = E0_neg - (RT/F) ln(theta/(1-theta)) - (Omega/F)(1 - 2 theta)   §3.2
    i_meas = i_cell + V_term/R_leak + C_stray dV_term/dt + beam_on * delta * I_beam   §3.6, §5

Reversible insertion kinetics are written in the Frumkin (Laviron surface-wave) form, which is
Butler-Volmer with eta_neg = U_neg(theta) - E_neg and j0 normalised at theta = 1/2::

    i_rev = 2 A j0 [(1-theta) exp(alpha phi - alpha w (1-2 theta))
                    - theta exp(-(1-alpha) phi + (1-alpha) w (1-2 theta))],
    phi = F (E0_neg - E_neg)/(RT),  w = Omega/(RT)

It vanishes exactly at U_neg(theta) = E_neg and, unlike constant-j0 BV on a logarithmic
isotherm, has no singularity at theta -> 0 or 1 (insertion needs empty sites, extraction needs
Li). theta is the occupancy of the electroactive layer (``isotherm_source="thin_layer"``,
amount Gamma, §3.3), or the transport's surface fraction u(0)/u_max (``"transport"``, §3.5),
coupled implicitly through ``LiTransport.surface_response``.

The growing electrode (``formation_rate_per_s > 0``, thin-layer mode with a transport; decision
0020): the in-situ electrode forms by an irreversible decomposition of the electrolyte where
electrons reach it, i.e. on the formed (reduced, electronically conducting) electrode, so its
rate grows with the electrode (autocatalytic growth, as in nucleation-and-growth kinetics) and
needs free sites at the Pt surface::

    i_form = F A k_f (L_seed + L_el) (u_max - u(0)) exp(-alpha_f F (E_neg - E_form)/(RT))
    L_el   = ∫ min(u/u_max, 1) dx          (the formed electrode as a saturated thickness)

The formed Li u(x) spreads from Pt at the electron-limited D_eff (transport.py, §3.5); u(0) after
each step is coupled implicitly (``_plan_batch``). No pool, no cycle counter: the decomposition
slows as the surface sites fill and D_eff carries Li away. The reversible Li lives in the formed
electrode: its sites are the Ti4+/Ti3+ couple, r_rev c0 per volume, so the thin layer's amount is
``Gamma = gamma_mol_per_m2 + r_rev c0 L_el`` and, the reaction spreading over it, its exchange
current ``j0 = F k_s Gamma`` (``exchange_rate_per_s``); both follow what the cell did. c/c0
stays below 1 + u_max/c0 + r_rev (``concentration_ratio``).

Sources: ``advance`` is the SMU as a voltage source (current compliance); ``advance_current`` is
the SMU as a current source with a voltage limit (galvanostatic): the same Newton solves the
electrode potentials and the terminal voltage for the sourced current, and at the limit the
voltage is held there with the current the cell then takes.

Integration: backward Euler in time, Newton on (E_pos, E_neg, theta) each step (L-stable: the
R_ct C_dl ~ 40 ms and R_s C_stray time constants are far below dt). ``current_A`` is the step
mean (charge/dt), the quantity an integrating SMU reports.

Simplifications (named): U_pos constant (positive electrode capacity >> negative, §3.2); the
double layers charge with the interface potentials (equal to C d(eta)/dt of §3.2 when U is
constant); beam-induced current is a current source in parallel with the cell (§3.6) with a fixed
yield; Gamma and the decomposition's active length are updated after each step (explicit); SMU
noise is not here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from insitem.simulators.transport import FARADAY_C_PER_MOL, LiTransport, TransportParameters

GAS_CONSTANT_J_PER_MOL_K = 8.314462618
CM2 = 1e-4  # m^2 per cm^2
OHM_CM2 = 1e-4  # ohm m^2 per ohm cm^2
UF_PER_CM2 = 1e-2  # F/m^2 per uF/cm^2
_EXP_CAP = 60.0  # exponent cap for the Tafel/BV exponentials (e^60 ~ 1e26)
# The cell's Newton on (E_pos, E_neg, theta) stops after a step below these. The Jacobian is exact,
# so near the solution the error falls quadratically: the step after one of 1e-8 V would be about
# f step^2 ~ 4e-15 V (f = F/RT = 39/V sets the curvature of the Butler-Volmer exponentials), and
# after 1e-8 in theta ~1e-15 (the theta equation is linear but for the Frumkin exponent, curvature
# of order Omega/RT); so the state is within the tolerance of stopping at steps below 1e-11 V and
# 1e-13 without a last step that only confirms it (1.45 instead of 2.0 iterations per stair of a
# CV; tests/simulators/test_electrochemistry.py compares both).
_NEWTON_STEP_V = 1e-8
_NEWTON_STEP_THETA = 1e-8
#: the two fitted numbers of the growing LASGTP electrode (docs/decisions/0020-growing-electrode.md)
LASGTP_FORMATION_RATE_PER_S = 1e-3
LASGTP_EXCHANGE_RATE_PER_S = 0.021


class CellParameters(BaseModel):
    """Everything the cell model needs (SI units; cm-based figures converted where noted)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "custom"
    area_m2: float = Field(gt=0, description="electrode area A (0.2 cm^2 bulk, §3.6)")
    temperature_K: float = Field(default=298.15, gt=0)
    U_pos_V: float = Field(description="positive electrode potential vs Li (3.93 V LiCoO2, §3.2 [Y14])")
    E0_neg_V: float = Field(description="negative electrode isotherm E0 vs Li (2.35 V in-situ electrode, [Y14])")
    series_resistance_ohm: float = Field(ge=0, description="R_s = R_el/A + R_leads (450 ohm bulk, §3.6)")
    R_ct_pos_ohm_m2: float = Field(gt=0, description="positive charge-transfer resistance (4000 ohm cm^2, [Y14])")
    R_ct_neg_ohm_m2: float = Field(gt=0, description="negative charge-transfer resistance (100 ohm cm^2, [Y14])")
    exchange_rate_per_s: float = Field(
        default=0.0, ge=0,
        description="k_s > 0: j0,neg = F k_s Gamma (the reaction spreads over the electroactive amount), "
        "R_ct,neg = RT/(F^2 k_s Gamma) replaces R_ct_neg_ohm_m2",
    )
    alpha: float = Field(default=0.5, gt=0, lt=1, description="transfer coefficient (§6.3)")
    C_dl_pos_F_per_m2: float = Field(default=10 * UF_PER_CM2, ge=0, description="10 uF/cm^2 (§6.3 [est])")
    C_dl_neg_F_per_m2: float = Field(default=10 * UF_PER_CM2, ge=0)
    stray_capacitance_F: float = Field(default=0.0, ge=0, description="cables/holder, 50 pF lamella (§3.6)")
    leakage_resistance_ohm: float | None = Field(default=1e11, gt=0, description="None = no leakage (§6.3)")
    gamma_mol_per_m2: float = Field(gt=0, description="electroactive amount Gamma of the contact before any growth")
    reversible_sites_over_c0: float = Field(
        default=0.0, ge=0, description="r_rev: reversible sites per volume of formed electrode / c0 (0: no growth)"
    )
    omega_RT: float = Field(default=0.0, description="Frumkin interaction Omega/RT (§3.2; 0 = Langmuir)")
    formation_rate_per_s: float = Field(
        default=0.0, ge=0, description="k_f of the decomposition that forms the electrode (0: none), at E_neg = E_form"
    )
    formation_seed_m: float = Field(
        default=2e-9, gt=0, description="active length of the bare Pt contact for the decomposition (growth nucleus)"
    )
    formation_E_V: float = Field(default=2.45, description="E_form vs Li of the decomposition (Tafel reference)")
    formation_alpha: float = Field(default=0.5, gt=0, le=1)
    beam_induced_yield: float = Field(default=0.05, description="delta_eff: i = delta * I_beam (§6.3 [est])")
    isotherm_source: Literal["thin_layer", "transport"] = "thin_layer"
    initial_open_circuit_V: float = Field(description="cell voltage at rest at t = 0 (sets the initial theta)")
    transport: TransportParameters | None = Field(
        default=None, description="Li transport attached by default (None: no profile tracked)"
    )
    transport_dt_s: float = Field(
        default=15.0, gt=0, description="thin_layer mode: the transport is advanced in steps of up to this"
    )

    @property
    def f_per_V(self) -> float:
        return FARADAY_C_PER_MOL / (GAS_CONSTANT_J_PER_MOL_K * self.temperature_K)

    # ---------------------------------------------------------------- presets (§6.3, §3.6)
    @classmethod
    def lasgtp_bulk(cls, **overrides: Any) -> "CellParameters":
        """LiCoO2 | LASGTP 90 um | Pt bulk cell of [Y14] (§3.1-3.3, §6.3 bulk column).

        A = 0.2 cm^2, R_s = 90 ohm cm^2 / A = 450 ohm, R_ct,pos 4000 ohm cm^2 [Y14], Omega = 0
        (Langmuir). The negative electrode grows (decision 0020): reversible sites r_rev = 1.4/1.5
        c0 (the 1.4 Ti per formula unit of LASGTP as Ti4+/Ti3+ over its 1.5 Li at c0, sample.py);
        contact amount Gamma_0 = 0.4e-8 mol/cm^2 [est, §3.3]; decomposition at E_form = 2.45 V vs
        Li [est], alpha_f 0.5 [est], k_f = 1e-3 /s [est; the end state moves < 1 % for k_f x0.1
        .. x10], seed 2 nm [est]; u_max = 7.5 c0 and D_eff = 5.2e-16 cm^2/s from §3.5/§6.3.
        Fitted: k_s = 0.021 /s, so that j0 = F k_s Gamma gives [Y14]'s interfacial resistance of
        at most 100 ohm cm^2 after 50 cycles (not the Li profile). Measured (50 cycles): charge
        peaks 2.7, 5.4, 11.3 uA at cycles 1, 10, 50; end 8.1 c0 at Pt, 6 c0 at 71 nm (paper 160
        nm), 5 % of the excess at 345 nm (paper ~400 nm).
        """
        values: dict[str, Any] = dict(
            name="lasgtp_bulk",
            area_m2=0.2 * CM2,
            U_pos_V=3.93,
            E0_neg_V=2.35,
            series_resistance_ohm=90 * OHM_CM2 / (0.2 * CM2),
            R_ct_pos_ohm_m2=4000 * OHM_CM2,
            R_ct_neg_ohm_m2=100 * OHM_CM2,
            gamma_mol_per_m2=0.4e-8 / CM2,
            exchange_rate_per_s=LASGTP_EXCHANGE_RATE_PER_S,
            reversible_sites_over_c0=1.4 / 1.5,
            formation_rate_per_s=LASGTP_FORMATION_RATE_PER_S,
            initial_open_circuit_V=0.5,
            transport=TransportParameters(D0_m2_per_s=5.2e-20),
        )
        values.update(overrides)
        return cls(**values)

    @classmethod
    def lfp_lamella(cls, **overrides: Any) -> "CellParameters":
        """LFP | LAGP | LVP FIB-lamella micro-battery of [P2] (§3.6, §6.3 lamella column).

        A = 1e-8 cm^2 (10 um x 100 nm), R_s = 1e8 ohm (heavy iR at nA), stray 50 pF, leakage
        1e11 ohm. U_pos = 3.45 V (LFP), E0_neg = 1.8 V (LVP anode plateau) [est: typical values,
        not in §6.3]. Gamma from the LFP capacity 2.2 nC (§3.6): 2.2e-9 C / (F A). R_ct 100 ohm
        cm^2 at both interfaces scaled by area (1e10 ohm) [est]. No formation, no growth.
        """
        area = 1e-8 * CM2
        gamma = 2.2e-9 / (FARADAY_C_PER_MOL * area)
        values: dict[str, Any] = dict(
            name="lfp_lamella",
            area_m2=area,
            U_pos_V=3.45,
            E0_neg_V=1.8,
            series_resistance_ohm=1e8,
            R_ct_pos_ohm_m2=100 * OHM_CM2,
            R_ct_neg_ohm_m2=100 * OHM_CM2,
            stray_capacitance_F=50e-12,
            gamma_mol_per_m2=gamma,
            initial_open_circuit_V=0.0,
        )
        values.update(overrides)
        return cls(**values)

    @classmethod
    def si_nanoparticle(cls, **overrides: Any) -> "CellParameters":
        """Si nanoparticle vs LiOx@Li of [P3]: lithiation by holding at -0.2 V.

        The positive electrode is Li metal (U_pos = 0 V); Si lithiates below E0_neg = 0.3 V vs
        Li [est]; the pristine particle rests at -2.0 V cell voltage [est]. theta comes from Li
        transport inside the particle (isotherm_source="transport"), D = 5e-12 cm^2/s [P3],
        100 nm particle as a closed slab (no-flux far side) [est geometry], c0 = Si site
        density 5e22 cm^-3 (so c/c0 - 1 = Li per Si), u_max = 3.75 c0 (Li15Si4) [est];
        implicit Euler because D dt/dx^2 >> 1. Contact area (100 nm)^2, R_s 1e9 ohm through the
        oxide [est], stray 50 pF; R_ct 0.1 ohm cm^2 at both contacts [est: fast Li/Si
        contacts; with 100 ohm cm^2 a (100 nm)^2 contact could pass only ~0.03 pA].
        """
        area = (100e-9) ** 2
        c_si = 5e22 * 1e6 / 6.02214076e23  # mol/m^3
        tp = TransportParameters(
            c0_mol_per_m3=c_si,
            u_max_over_c0=3.75,
            D0_m2_per_s=5e-16,
            domain_m=100e-9,
            dx_min_m=2e-9,
            dx_growth=1.0,
            far_boundary="no_flux",
            implicitness=1.0,
        )
        gamma = tp.u_max_mol_per_m3 * tp.domain_m
        values: dict[str, Any] = dict(
            name="si_nanoparticle",
            area_m2=area,
            U_pos_V=0.0,
            E0_neg_V=0.3,
            series_resistance_ohm=1e9,
            R_ct_pos_ohm_m2=0.1 * OHM_CM2,
            R_ct_neg_ohm_m2=0.1 * OHM_CM2,
            stray_capacitance_F=50e-12,
            gamma_mol_per_m2=gamma,
            isotherm_source="transport",
            initial_open_circuit_V=-2.0,
            transport=tp,
        )
        values.update(overrides)
        return cls(**values)


@dataclass(frozen=True)
class CellStep:
    """Result of one `Cell.advance` interval."""

    current_A: float  # mean measured current over the interval (cell + leakage + stray + beam)
    terminal_V: float  # voltage across the cell at the end of the interval
    compliance_tripped: bool
    charge_C: float  # charge through the SMU during the interval


def isotherm_U_V(theta: float, E0_V: float, omega_RT: float, f_per_V: float) -> float:
    """Frumkin insertion isotherm U(theta) (physics.md §3.2)."""
    th = min(max(theta, 1e-300), 1.0 - 1e-16)
    return E0_V - (math.log(th) - math.log1p(-th)) / f_per_V - omega_RT * (1.0 - 2.0 * th) / f_per_V


def isotherm_theta(E_V: float, E0_V: float, omega_RT: float, f_per_V: float) -> float:
    """Inverse of `isotherm_U_V` (bisection on the logit; unique for Omega < 2RT)."""
    lo, hi = -745.0, 40.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        th = 1.0 / (1.0 + math.exp(-mid))
        if isotherm_U_V(th, E0_V, omega_RT, f_per_V) > E_V:
            lo = mid
        else:
            hi = mid
    return 1.0 / (1.0 + math.exp(-0.5 * (lo + hi)))


class Cell:
    """The simulated battery. Time advances only through `advance` (the world's clock)."""

    def __init__(
        self,
        params: CellParameters,
        transport: LiTransport | None = None,
        rng: np.random.Generator | None = None,
    ) -> None:
        self.params = params
        p = params
        if transport is None and p.transport is not None:
            transport = LiTransport(p.transport)
        if p.isotherm_source == "transport" and transport is None:
            raise ValueError("isotherm_source='transport' needs a LiTransport")
        self.transport = transport
        self.rng = rng  # reserved for stochastic extensions; the cell physics is deterministic
        self._f = p.f_per_V
        self._RT_over_F = 1.0 / self._f
        self._init_step_constants()
        self.time_s = 0.0
        self.charge_passed_C = 0.0  # ∫ i_meas dt through the SMU
        self.faradaic_rev_charge_C = 0.0  # ∫ i_rev dt (reversible insertion, net)
        self.formation_charge_C = 0.0  # ∫ i_form dt
        self.throughput_C = 0.0  # ∫ |i_rev| dt
        self.reversals = 0  # completed sign reversals of i_rev (informational)
        self._rev_sign = 0
        self._rev_since = 0.0
        self.E_pos_V = p.U_pos_V
        self.E_neg_V = p.U_pos_V - p.initial_open_circuit_V
        self.V_term_V = p.initial_open_circuit_V
        self.i_cell_A = 0.0
        self.i_rev_A = 0.0
        self.i_form_A = 0.0
        self.last_tripped = False
        self.last_current_A = 0.0  # measured current of the last step (A)
        self._pending_flux_mol = 0.0  # thin_layer mode: Faradaic Li not yet handed to the transport
        self._pending_dt = 0.0
        self._theta_solved = math.nan  # theta of the last Newton solution (advance_sweep's predictor)
        self._gamma = p.gamma_mol_per_m2  # electroactive amount, grows with the formed electrode
        self._form_a = 0.0  # formation: surface excess after this step = a + b * J_form (see _plan_batch)
        self._form_b = 0.0
        self._form_L = p.formation_seed_m  # active length of the electrode for the decomposition
        self._grows = p.formation_rate_per_s > 0.0 and transport is not None and p.isotherm_source == "thin_layer"
        self._u_max_form = transport.params.u_max_mol_per_m3 if transport is not None else 0.0
        if self._grows:
            self._update_growth()
        theta0 = isotherm_theta(self.E_neg_V, p.E0_neg_V, p.omega_RT, self._f)
        if p.isotherm_source == "thin_layer":
            self.n_rev_mol_per_m2 = theta0 * self._gamma
        else:
            assert transport is not None
            self.n_rev_mol_per_m2 = 0.0
            # the transport's surface defines theta: start the electrode potential in equilibrium with it
            # a transport that already holds Li at the surface sets E_neg; an empty one keeps the given OCV
            th_s = transport.surface_fraction
            if th_s > 1e-9:
                self.E_neg_V = isotherm_U_V(th_s, p.E0_neg_V, p.omega_RT, self._f)
                self.V_term_V = p.U_pos_V - self.E_neg_V

    def _init_step_constants(self) -> None:
        """Per-step constants of `_solve` / `_commit` / `_history` (the parameters are frozen).

        Each is the same expression the step evaluates, so the values are bit-identical."""
        p = self.params
        A = p.area_m2
        self._FA = FARADAY_C_PER_MOL * A
        self._thin_layer = p.isotherm_source == "thin_layer"
        self._rev_hysteresis_C = 0.01 * self._FA * p.gamma_mol_per_m2
        self._g_leak = 0.0 if p.leakage_resistance_ohm is None else 1.0 / p.leakage_resistance_ohm
        j0p2 = 2.0 * A * (self._RT_over_F / p.R_ct_pos_ohm_m2)  # 2 A j0 (pos), j0 = RT/(F R_ct)
        self._solve_k = (
            self._f, p.series_resistance_ohm, p.alpha, 1.0 - p.alpha, 0.5 * j0p2, 0.5 * j0p2 * self._f,
            2.0 * A, self._RT_over_F, p.C_dl_pos_F_per_m2 * A, p.C_dl_neg_F_per_m2 * A, p.U_pos_V, p.E0_neg_V,
            self._FA, p.formation_rate_per_s, p.formation_alpha * self._f, p.formation_E_V,
        )

    # ---------------------------------------------------------------- the growing electrode
    def formed_thickness_m(self) -> float:
        """L_el = ∫ min(u/u_max, 1) dx: the formed electrode as an equivalent saturated thickness."""
        if self.transport is None:
            return 0.0
        tr = self.transport
        return float(np.dot(tr._vol, np.minimum(tr._u / tr._u_max, 1.0)))

    def _update_growth(self) -> None:
        """After each transport step: the electroactive amount and the decomposition's active
        length follow the formed electrode, and the surface response for the next batch is set."""
        p = self.params
        assert self.transport is not None
        L_el = self.formed_thickness_m()
        self._gamma_base = p.gamma_mol_per_m2 + p.reversible_sites_over_c0 * self.transport.params.c0_mol_per_m3 * L_el
        self._gamma_per_mol = p.reversible_sites_over_c0 * self.transport.params.c0_mol_per_m3 / self._u_max_form
        self._form_L_base = p.formation_seed_m + L_el
        self._grow_pending()
        self._plan_batch()

    def _grow_pending(self) -> None:
        """Sites made by the decomposition since the last transport step count at once (Li of the
        formed electrode never exceeds u_max, so each mol/m^2 formed adds 1/u_max of thickness):
        the electrode grows step by step, not in batches."""
        n = self._pending_flux_mol
        self._gamma = self._gamma_base + self._gamma_per_mol * n
        self._form_L = self._form_L_base + n / self._u_max_form

    def _plan_batch(self) -> None:
        """Surface excess u(0) seen by the decomposition during the transport batch in progress:
        u(0) at the end of the batch is exactly u_hom + w0 J_mean (the step is linear in J); after
        a part tau of the batch with N mol/m^2 already handed over it is taken as
        u_start + (u_hom - u_start) tau/T + w0 N/T (linear in time, exact at tau = T)."""
        assert self.transport is not None
        T = self.params.transport_dt_s
        u_hom, w0 = self.transport.surface_response(T)
        self._batch = (float(self.transport._u[0]), u_hom, w0 / T, T)

    def concentration_ratio(self, x_m: np.ndarray | float) -> np.ndarray:
        """c/c0 at distances x_m from Pt: the formed electrode (the transport's excess) plus the
        reversible Li, theta r_rev min(u/u_max, 1) (the thin layer spread over the formed
        electrode; the bare contact's share gamma_mol_per_m2 is not drawn). Bounded by
        1 + u_max/c0 + r_rev."""
        if self.transport is None:
            return np.ones_like(np.asarray(x_m, dtype=float))
        self.sync_transport()
        tr = self.transport
        c = tr.concentration_ratio(x_m)
        r_rev = self.params.reversible_sites_over_c0
        if r_rev > 0.0 and self._thin_layer:
            x = np.asarray(x_m, dtype=float)
            phi = np.minimum(np.interp(x, tr._x, tr.u_mol_per_m3, right=0.0) / tr._u_max, 1.0)
            c = c + np.where(x < 0, 0.0, (self.n_rev_mol_per_m2 / self._gamma) * r_rev * phi)
        return c

    def _history(self) -> tuple[float, float, float]:
        p = self.params
        if p.exchange_rate_per_s > 0.0:
            return self._gamma, self._RT_over_F / (FARADAY_C_PER_MOL * p.exchange_rate_per_s * self._gamma), p.omega_RT
        return self._gamma, p.R_ct_neg_ohm_m2, p.omega_RT

    @property
    def gamma_mol_per_m2(self) -> float:
        return self._gamma

    @property
    def theta(self) -> float:
        """Occupancy feeding U_neg: thin-layer n/Gamma, or the transport's u(0)/u_max."""
        if self.params.isotherm_source == "thin_layer":
            return self.n_rev_mol_per_m2 / self._history()[0]
        assert self.transport is not None
        return self.transport.surface_fraction

    @property
    def U_neg_V(self) -> float:
        return isotherm_U_V(self.theta, self.params.E0_neg_V, self._history()[2], self._f)

    @property
    def open_circuit_V(self) -> float:
        """Equilibrium cell voltage U_pos - U_neg(theta) (§3.2)."""
        return self.params.U_pos_V - self.U_neg_V

    # ---------------------------------------------------------------- stepping
    def advance(
        self,
        dt_s: float,
        applied_V: float | None,
        compliance_A: float,
        beam_current_A: float = 0.0,
    ) -> CellStep:
        """Advance dt_s with the SMU sourcing applied_V (None: output off, high impedance).

        The SMU turns into a current source at +/-compliance_A when the voltage source would
        exceed it; `terminal_V` is then the voltage actually reached.
        """
        if dt_s <= 0:
            raise ValueError("dt_s must be > 0")
        if compliance_A <= 0:
            raise ValueError("compliance_A must be > 0")
        i_meas, tripped = self._advance(dt_s, applied_V, compliance_A, beam_current_A)
        return CellStep(i_meas, self.V_term_V, tripped, i_meas * dt_s)

    def advance_current(
        self,
        current_A: float,
        dt_s: float,
        voltage_limit_V: float | None = None,
        beam_current_A: float = 0.0,
    ) -> CellStep:
        """Advance dt_s with the SMU sourcing current_A (galvanostatic; > 0 charges the cell).

        The electrode potentials and the terminal voltage are solved for. `voltage_limit_V` is
        the voltage the cell may not pass in the direction the current drives it (above it for
        current_A >= 0, below it for current_A < 0): when the constant current would carry the
        terminal voltage past it, the SMU holds the voltage at the limit and the cell takes what
        current it draws there (a SourceMeter in current-source mode at its voltage limit);
        `compliance_tripped` is then True. While not limited the charge through the SMU is
        exactly current_A * dt_s.
        """
        if dt_s <= 0:
            raise ValueError("dt_s must be > 0")
        if not math.isfinite(current_A):
            raise ValueError("current_A must be finite")
        i_meas, limited = self._advance_current(dt_s, current_A, voltage_limit_V, beam_current_A)
        return CellStep(i_meas, self.V_term_V, limited, i_meas * dt_s)

    def _advance_current(self, dt: float, current_A: float, limit_V: float | None,
                         beam_A: float) -> tuple[float, bool]:
        p = self.params
        i_beam = p.beam_induced_yield * beam_A
        Cs = p.stray_capacitance_F
        g_par = self._g_leak + Cs / dt
        V_old = self.V_term_V
        sign = 1.0 if current_A >= 0.0 else -1.0
        try:
            sol = self._solve(dt, None, current_A - i_beam + Cs * V_old / dt, g_par)
        except FloatingPointError:
            if limit_V is None:
                raise
            # no state within Newton's reach carries this current: the voltage runs away (tens of
            # volts onto the double layers), so the source sits at its limit
            sol = (math.nan,) * 6 + (limit_V + sign,)
        i_meas = current_A
        limited = False
        if limit_V is not None and (sol[6] - limit_V) * sign > 0.0:
            lim = self._solve(dt, limit_V, 0.0, 0.0)
            i_lim = lim[3] + lim[6] * g_par - Cs * V_old / dt + i_beam
            # at the limit the cell draws less than the source current (same direction); if the
            # nonlinear solution says otherwise the constant current is the operating point
            if (i_lim - current_A) * sign < 0.0 or math.isnan(sol[0]):
                sol, i_meas, limited = lim, i_lim, True
        E_p, E_n, th, i_cell, i_rev, i_form, V = sol
        self._commit(dt, E_p, E_n, th, i_cell, i_rev, i_form, V)
        self.charge_passed_C += i_meas * dt
        self.last_tripped = limited
        self.last_current_A = i_meas
        return i_meas, limited

    def advance_sweep(
        self,
        t_points_s: np.ndarray,
        applied_V_points: np.ndarray,
        compliance_A: float,
        beam_current_A: float | np.ndarray = 0.0,
    ) -> dict[str, np.ndarray]:
        """Fast path for a staircase: interval k runs from t[k] to t[k+1] at applied_V[k+1].

        `t_points_s[0]` must be the present time offset (only differences are used). Returns
        arrays (len(t) - 1) of current_A, terminal_V, compliance_tripped, charge_C, and time_s.

        Each step's Newton starts from an extrapolation of the last steps' (E_pos, E_neg, theta):
        quadratic through the last three on equal stairs, else linear in time through the last two
        (first two steps: the present state, as `advance`). The converged state is the same as from
        `advance` to the Newton tolerance; the guess only saves iterations.
        """
        t = np.asarray(t_points_s, dtype=float)
        v = np.asarray(applied_V_points, dtype=float)
        if t.shape != v.shape or t.ndim != 1:
            raise ValueError("t_points_s and applied_V_points must be 1-D of equal length")
        n = len(t) - 1
        beam = np.broadcast_to(np.asarray(beam_current_A, dtype=float), (len(t),))
        dts = np.diff(t)
        if np.any(dts <= 0):
            raise ValueError("t_points_s must increase")
        dt_list = dts.tolist()
        # quadratic predictor where the step and the two before have equal stairs
        same = np.abs(np.diff(dts)) < 1e-9 * dts[1:]  # same[j]: dts[j + 1] == dts[j]
        quad = np.zeros(n, dtype=bool)
        quad[3:] = same[2:] & same[1:-1]
        sweep = self._sweep_thin_layer if self._thin_layer else self._sweep_steps
        cur, vt, trip, times = sweep(dt_list, v.tolist(), beam.tolist(), quad.tolist(), compliance_A)
        cur_a = np.array(cur, dtype=float)
        if cur:
            self.last_current_A = cur[-1]
        return {"time_s": np.array(times, dtype=float), "current_A": cur_a, "terminal_V": np.array(vt, dtype=float),
                "compliance_tripped": np.array(trip, dtype=bool), "charge_C": cur_a * dts}

    def _sweep_steps(self, dt_list: list[float], v_list: list[float], beam_list: list[float],
                     quad_list: list[bool], compliance_A: float) -> tuple[list[float], list[float], list[bool], list[float]]:
        """`advance_sweep`'s stairs through `_solve` and `_commit` (any isotherm source)."""
        cur: list[float] = []
        vt: list[float] = []
        trip: list[bool] = []
        times: list[float] = []
        solve = self._solve
        commit = self._commit
        Cs = self.params.stray_capacitance_F
        beam_yield = self.params.beam_induced_yield
        g_leak = self._g_leak
        guess: tuple[float, float, float] | None = None
        Epm = Enm = thm = 0.0  # the solution three steps back
        Ep0 = En0 = th0 = 0.0  # the solution two steps back
        Ep1 = En1 = th1 = dt1 = 0.0  # the previous step's solution and interval
        for k in range(len(dt_list)):
            dt = dt_list[k]
            if quad_list[k]:
                th_g = 3.0 * (th1 - th0) + thm
                if not 0.0 < th_g < 1.0:
                    th_g = th1
                guess = (3.0 * (Ep1 - Ep0) + Epm, 3.0 * (En1 - En0) + Enm, th_g)
            elif k >= 2:
                r = dt / dt1
                th_g = th1 + (th1 - th0) * r
                if not 0.0 < th_g < 1.0:
                    th_g = th1
                guess = (Ep1 + (Ep1 - Ep0) * r, En1 + (En1 - En0) * r, th_g)
            # the voltage-source step of `_advance`; a compliance trip goes through `_advance` itself
            V_app = v_list[k + 1]
            Ep, En, th, i_cell, i_rev, i_form, V = solve(dt, V_app, 0.0, 0.0, guess)
            i_meas = i_cell + V * (g_leak + Cs / dt) - Cs * self.V_term_V / dt + beam_yield * beam_list[k + 1]
            if abs(i_meas) > compliance_A:
                i_meas, tr = self._advance(dt, V_app, compliance_A, beam_list[k + 1])
                Ep, En, th, V = self.E_pos_V, self.E_neg_V, self._theta_solved, self.V_term_V
            else:
                tr = False
                commit(dt, Ep, En, th, i_cell, i_rev, i_form, V)
                self.charge_passed_C += i_meas * dt
                self.last_tripped = False
            Epm, Enm, thm = Ep0, En0, th0
            Ep0, En0, th0 = Ep1, En1, th1
            Ep1, En1, th1, dt1 = Ep, En, th, dt
            cur.append(i_meas)
            vt.append(V)
            trip.append(tr)
            times.append(self.time_s)
        return cur, vt, trip, times

    def _sweep_thin_layer(self, dt_list: list[float], v_list: list[float], beam_list: list[float],
                          quad_list: list[bool], compliance_A: float) -> tuple[list[float], list[float], list[bool], list[float]]:
        """`advance_sweep`'s stairs for the thin-layer isotherm, with `_solve` (voltage mode) and
        `_commit` written out in one loop over local variables.

        The arithmetic is that of `_solve` and `_commit` expression for expression (with the
        voltage-mode constants a_par = 1, b_par = 0, and form_in_theta = 0 substituted), so the
        states and currents are bit-identical to `_sweep_steps`. The state lives in locals between
        stairs and is written back to the cell before every call that reads it (a transport
        batch, a compliance trip, a Newton that does not converge from the guess) and at the end.
        """
        cur: list[float] = []
        vt: list[float] = []
        trip: list[bool] = []
        times: list[float] = []
        p = self.params
        (f, Rs, alpha, beta, hj0p, hj0p_f, twoA, RT_over_F, CpA, CnA, Up, E0, FA, kf, af, Ef) = self._solve_k
        Cs = p.stray_capacitance_F
        beam_yield = p.beam_induced_yield
        g_leak = self._g_leak
        ks = p.exchange_rate_per_s
        rct_fixed = p.R_ct_neg_ohm_m2
        w = p.omega_RT
        grows = self._grows
        has_transport = self.transport is not None
        T_batch = p.transport_dt_s - 1e-9
        hyst = self._rev_hysteresis_C
        exp = math.exp
        cap = _EXP_CAP
        aw = alpha * w
        bw = beta * w
        af_n = alpha * f
        bf_n = beta * f
        two_aw = 2.0 * aw
        two_bw = 2.0 * bw
        FKs = FARADAY_C_PER_MOL * ks
        tol_V = _NEWTON_STEP_V
        tol_th = _NEWTON_STEP_THETA

        # the cell's state in locals (written back by `store`, read again by `load`)
        Ep_o = En_o = V_old = n_rev = pend_flux = pend_dt = gamma = form_L = 0.0
        gamma_base = gamma_per_mol = form_L_base = u_max_form = 0.0
        us0 = u_hom = w_T = T = 0.0
        q_form = q_rev = q_thr = q_smu = time_s = rev_since = 0.0
        rev_sign = reversals = 0
        i_cell = i_rev = i_form = th = 0.0
        tripped = False

        def load() -> None:
            nonlocal Ep_o, En_o, V_old, n_rev, pend_flux, pend_dt, gamma, form_L, gamma_base, gamma_per_mol
            nonlocal form_L_base, u_max_form, us0, u_hom, w_T, T, q_form, q_rev, q_thr, q_smu, time_s
            nonlocal rev_since, rev_sign, reversals
            Ep_o, En_o, V_old = self.E_pos_V, self.E_neg_V, self.V_term_V
            n_rev, pend_flux, pend_dt = self.n_rev_mol_per_m2, self._pending_flux_mol, self._pending_dt
            gamma, form_L = self._gamma, self._form_L
            if grows:
                gamma_base, gamma_per_mol, form_L_base = self._gamma_base, self._gamma_per_mol, self._form_L_base
                u_max_form = self._u_max_form
                us0, u_hom, w_T, T = self._batch
            q_form, q_rev, q_thr = self.formation_charge_C, self.faradaic_rev_charge_C, self.throughput_C
            q_smu, time_s = self.charge_passed_C, self.time_s
            rev_since, rev_sign, reversals = self._rev_since, self._rev_sign, self.reversals

        def store(th_solved: float) -> None:
            self.E_pos_V, self.E_neg_V, self.V_term_V = Ep_o, En_o, V_old
            self.n_rev_mol_per_m2, self._pending_flux_mol, self._pending_dt = n_rev, pend_flux, pend_dt
            self._gamma, self._form_L = gamma, form_L
            self.formation_charge_C, self.faradaic_rev_charge_C, self.throughput_C = q_form, q_rev, q_thr
            self.charge_passed_C, self.time_s = q_smu, time_s
            self._rev_since, self._rev_sign, self.reversals = rev_since, rev_sign, reversals
            self.i_cell_A, self.i_rev_A, self.i_form_A = i_cell, i_rev, i_form
            self._theta_solved = th_solved
            self.last_tripped = tripped

        load()
        th = self._theta_solved
        have_guess = False
        Epg = Eng = thg = 0.0
        Epm = Enm = thm = 0.0  # the solution three steps back
        Ep0 = En0 = th0 = 0.0  # the solution two steps back
        Ep1 = En1 = th1 = dt1 = 0.0  # the previous step's solution and interval
        for k in range(len(dt_list)):
            dt = dt_list[k]
            if quad_list[k]:
                thg = 3.0 * (th1 - th0) + thm
                if not 0.0 < thg < 1.0:
                    thg = th1
                Epg, Eng = 3.0 * (Ep1 - Ep0) + Epm, 3.0 * (En1 - En0) + Enm
                have_guess = True
            elif k >= 2:
                r = dt / dt1
                thg = th1 + (th1 - th0) * r
                if not 0.0 < thg < 1.0:
                    thg = th1
                Epg, Eng = Ep1 + (Ep1 - Ep0) * r, En1 + (En1 - En0) * r
                have_guess = True
            V_app = v_list[k + 1]
            # ---- `_solve` in voltage mode (a_par = 1, b_par = 0, c_par = V_app), thin layer
            j0n2 = twoA * (RT_over_F / (RT_over_F / (FKs * gamma) if ks > 0.0 else rct_fixed))
            Cp = CpA / dt
            Cn = CnA / dt
            theta_star = n_rev / gamma
            k_theta = dt / (FA * gamma)
            if grows:
                tau = pend_dt + dt
                form_free = u_max_form - (us0 + (u_hom - us0) * (tau / T) + w_T * pend_flux)
                form_b = w_T * dt / FA
                form_k = FA * kf * form_L if form_free > 0.0 else 0.0
            else:
                form_free = form_b = form_k = 0.0
            if have_guess:
                Ep, En, th = Epg, Eng, thg
            else:
                Ep, En = Ep_o, En_o
                th = min(max(theta_star, 0.0), 1.0)
            converged = False
            for _ in range(200):
                # positive interface, negative interface, formation, residuals and the eliminated Jacobian as in `_solve`
                eta = (Ep - Up) * f
                xa = alpha * eta
                xc = -beta * eta
                ea = exp(cap if xa > cap else xa)
                ec = exp(cap if xc > cap else xc)
                Ip = hj0p * (ea - ec) + Cp * (Ep - Ep_o)
                dIp = hj0p_f * (alpha * ea + beta * ec) + Cp
                phi = (E0 - En) * f
                s = 1.0 - 2.0 * th
                xf = alpha * phi - aw * s
                xb = -beta * phi + bw * s
                ef = exp(cap if xf > cap else xf)
                eb = exp(cap if xb > cap else xb)
                om = 1.0 - th
                i_rev = j0n2 * (om * ef - th * eb)
                di_dE = -j0n2 * (om * ef * af_n + th * eb * bf_n)
                di_dth = j0n2 * (ef * (om * two_aw - 1.0) - eb * (1.0 + th * two_bw))
                if form_k > 0.0:
                    xe = -af * (En - Ef)
                    g = form_k * exp(cap if xe > cap else xe)
                    den = 1.0 + g * form_b
                    i_form = g * form_free / den
                    dform_dE = -af * i_form / den
                else:
                    i_form = 0.0
                    dform_dE = 0.0
                In = i_rev + i_form - Cn * (En - En_o)
                r1 = (Ep - En + Rs * Ip) - V_app
                r2 = Ip - In
                r3 = th - theta_star - k_theta * i_rev
                a11 = 1.0 + Rs * dIp
                X = di_dE
                a32 = -k_theta * X
                a33 = 1.0 - k_theta * di_dth
                den = -X / a33 - dform_dE + Cn + dIp / a11
                dEn = (-r2 + dIp * r1 / a11 - di_dth * r3 / a33) / den
                dEp = (dEn - r1) / a11
                dth = (-r3 - a32 * dEn) / a33
                if dEp > 0.1 or dEp < -0.1 or dEn > 0.1 or dEn < -0.1:
                    sc = 0.1 / max(abs(dEp), abs(dEn))
                    dEp *= sc
                    dEn *= sc
                    dth *= sc
                Ep += dEp
                En += dEn
                th_new = th + dth
                if th_new < 0.0:
                    th_new = 0.5 * th
                elif th_new > 1.0:
                    th_new = 0.5 * (th + 1.0)
                dth = th_new - th
                th = th_new
                if -tol_V < dEp < tol_V and -tol_V < dEn < tol_V and -tol_th < dth < tol_th:
                    converged = True
                    break
            if converged:
                Ip += dIp * dEp
                i_rev += di_dE * dEn + di_dth * dth
                i_form += dform_dE * dEn
                V = Ep - En + Rs * Ip
                i_cell = Ip
                i_meas = i_cell + V * (g_leak + Cs / dt) - Cs * V_old / dt + beam_yield * beam_list[k + 1]
            if not converged or abs(i_meas) > compliance_A:
                # the general path: a cold-start Newton (`_solve` from the present state) or a
                # compliance trip (`_advance`), on the cell's own attributes
                store(self._theta_solved if k == 0 else th1)
                if converged:
                    i_meas, tripped = self._advance(dt, V_app, compliance_A, beam_list[k + 1])
                else:
                    sol = self._solve(dt, V_app, 0.0, 0.0)
                    i_meas = sol[3] + sol[6] * (g_leak + Cs / dt) - Cs * V_old / dt + beam_yield * beam_list[k + 1]
                    if abs(i_meas) > compliance_A:
                        i_meas, tripped = self._advance(dt, V_app, compliance_A, beam_list[k + 1])
                    else:
                        tripped = False
                        self._commit(dt, *sol)
                        self.charge_passed_C += i_meas * dt
                        self.last_tripped = False
                i_cell, i_rev, i_form = self.i_cell_A, self.i_rev_A, self.i_form_A
                Ep, En, th, V = self.E_pos_V, self.E_neg_V, self._theta_solved, self.V_term_V
                load()
            else:
                tripped = False
                # ---- `_commit`, thin layer
                n_new = n_rev + dt * i_rev / FA
                n_rev = 0.0 if n_new < 0.0 else n_new
                if has_transport:
                    pend_flux += dt * i_form / FA
                    pend_dt += dt
                    if grows:
                        gamma = gamma_base + gamma_per_mol * pend_flux
                        form_L = form_L_base + pend_flux / u_max_form
                q_form += i_form * dt
                q_rev += i_rev * dt
                q_abs = (i_rev if i_rev >= 0.0 else -i_rev) * dt
                q_thr += q_abs
                sgn = 1 if i_rev > 0 else -1
                if sgn != rev_sign:
                    rev_since += q_abs
                    if rev_since > hyst:
                        if rev_sign != 0:
                            reversals += 1
                        rev_sign = sgn
                        rev_since = 0.0
                else:
                    rev_since = 0.0
                Ep_o, En_o, V_old = Ep, En, V
                time_s += dt
                q_smu += i_meas * dt
                if has_transport and pend_dt >= T_batch:
                    store(th)
                    self.sync_transport()
                    load()
            Epm, Enm, thm = Ep0, En0, th0
            Ep0, En0, th0 = Ep1, En1, th1
            Ep1, En1, th1, dt1 = Ep, En, th, dt
            cur.append(i_meas)
            vt.append(V)
            trip.append(tripped)
            times.append(time_s)
        store(th1 if dt_list else self._theta_solved)
        return cur, vt, trip, times

    def _advance(self, dt: float, applied_V: float | None, compliance_A: float, beam_A: float) -> tuple[float, bool]:
        p = self.params
        i_beam = p.beam_induced_yield * beam_A
        Cs = p.stray_capacitance_F
        g_par = self._g_leak + Cs / dt
        V_old = self.V_term_V
        tripped = False
        if applied_V is None:
            sol = self._solve(dt, None, 0.0 - i_beam + Cs * V_old / dt, g_par)
        else:
            sol = self._solve(dt, applied_V, 0.0, 0.0)
            i_meas = sol[3] + sol[6] * g_par - Cs * V_old / dt + i_beam
            if abs(i_meas) > compliance_A:
                tripped = True
                i_src = math.copysign(compliance_A, i_meas)
                sol = self._solve(dt, None, i_src - i_beam + Cs * V_old / dt, g_par)
        E_p, E_n, th, i_cell, i_rev, i_form, V = sol
        i_meas = i_cell + V * g_par - Cs * V_old / dt + i_beam
        if applied_V is None:
            i_meas = 0.0  # output off: nothing flows through the SMU
        self._commit(dt, E_p, E_n, th, i_cell, i_rev, i_form, V)
        self.charge_passed_C += i_meas * dt
        self.last_tripped = tripped
        self.last_current_A = i_meas
        return i_meas, tripped

    def _solve(self, dt: float, V_app: float | None, c_src: float, g_par: float,
               guess: tuple[float, float, float] | None = None) -> tuple[float, ...]:
        """Backward-Euler step: Newton on (E_pos, E_neg, theta).

        Voltage mode (V_app given): E_p - E_n + R_s i = V_app.
        Current mode (V_app None): i + g_par (E_p - E_n + R_s i) = c_src, i.e. the SMU current
        (compliance or 0 when off) minus beam current plus the stray-capacitor history term.
        Newton starts from `guess` (E_pos, E_neg, theta) if given, else from the present state;
        if it does not converge from the guess it is run again from the present state.
        Converged when a Newton step moves E by < 1e-11 V and theta by < 1e-13.
        """
        (f, Rs, alpha, beta, hj0p, hj0p_f, twoA, RT_over_F, CpA, CnA, Up, E0, FA, kf, af, Ef) = self._solve_k
        gamma, rct_neg, w = self._history()
        j0n2 = twoA * (RT_over_F / rct_neg)
        Cp = CpA / dt
        Cn = CnA / dt
        Ep_o = self.E_pos_V
        En_o = self.E_neg_V
        # theta = theta_star + k_theta * i_into_theta
        if self._thin_layer:
            theta_star = self.n_rev_mol_per_m2 / gamma
            k_theta = dt / (FA * gamma)
            form_in_theta = 0.0
        else:
            assert self.transport is not None
            u0, w0 = self.transport.surface_response(dt)
            u_max = self.transport.params.u_max_mol_per_m3
            theta_star = u0 / u_max
            k_theta = w0 / (FA * u_max)
            form_in_theta = 1.0
        # decomposition: i_form = F A k_f L_act (u_max - u_s) ee, with the surface excess after
        # the step u_s = form_a + form_b i_form (implicit in i_form; ee the Tafel exponential)
        if self._grows:
            us0, u_hom, w_T, T = self._batch
            tau = self._pending_dt + dt
            form_free = self._u_max_form - (us0 + (u_hom - us0) * (tau / T) + w_T * self._pending_flux_mol)
            form_b = w_T * dt / FA
            form_k = FA * kf * self._form_L if form_free > 0.0 else 0.0
        else:
            form_free = form_b = form_k = 0.0
        voltage_mode = V_app is not None
        a_par = 1.0 if voltage_mode else g_par
        b_par = 0.0 if voltage_mode else 1.0
        c_par = V_app if voltage_mode else c_src
        exp = math.exp
        cap = _EXP_CAP
        aw = alpha * w
        bw = beta * w
        af_n = alpha * f
        bf_n = beta * f
        two_aw = 2.0 * aw
        two_bw = 2.0 * bw
        tol_V = _NEWTON_STEP_V
        tol_th = _NEWTON_STEP_THETA
        if guess is None:
            Ep, En = Ep_o, En_o
            th = min(max(theta_star, 0.0), 1.0)
        else:
            Ep, En, th = guess
        for _ in range(200):
            # positive interface (caps: `cap if x > cap else x` is min(x, cap))
            eta = (Ep - Up) * f
            xa = alpha * eta
            xc = -beta * eta
            ea = exp(cap if xa > cap else xa)
            ec = exp(cap if xc > cap else xc)
            Ip = hj0p * (ea - ec) + Cp * (Ep - Ep_o)
            dIp = hj0p_f * (alpha * ea + beta * ec) + Cp
            # negative interface, reversible insertion (Frumkin form)
            phi = (E0 - En) * f
            s = 1.0 - 2.0 * th
            xf = alpha * phi - aw * s
            xb = -beta * phi + bw * s
            ef = exp(cap if xf > cap else xf)
            eb = exp(cap if xb > cap else xb)
            om = 1.0 - th
            i_rev = j0n2 * (om * ef - th * eb)
            di_dE = -j0n2 * (om * ef * af_n + th * eb * bf_n)
            di_dth = j0n2 * (ef * (om * two_aw - 1.0) - eb * (1.0 + th * two_bw))
            # formation (decomposition into the free sites at the Pt surface)
            if form_k > 0.0:
                xe = -af * (En - Ef)
                g = form_k * exp(cap if xe > cap else xe)
                den = 1.0 + g * form_b
                i_form = g * form_free / den
                dform_dE = -af * i_form / den
            else:
                i_form = 0.0
                dform_dE = 0.0
            In = i_rev + i_form - Cn * (En - En_o)
            dIn_dE = di_dE + dform_dE - Cn
            # residuals
            r1 = a_par * (Ep - En + Rs * Ip) + b_par * Ip - c_par
            r2 = Ip - In
            r3 = th - theta_star - k_theta * (i_rev + form_in_theta * i_form)
            # Jacobian [[a11, -a_par, 0], [dIp, -dIn_dE, -di_dth], [0, a32, a33]], eliminated onto dEn
            a11 = a_par * (1.0 + Rs * dIp) + b_par * dIp
            X = di_dE + form_in_theta * dform_dE  # the part of dIn/dE that moves theta (<= 0)
            a32 = -k_theta * X
            a33 = 1.0 - k_theta * di_dth
            # -dIn_dE + di_dth a32/a33 written without cancellation: every term >= 0
            den = -X / a33 - (1.0 - form_in_theta) * dform_dE + Cn + dIp * a_par / a11
            dEn = (-r2 + dIp * r1 / a11 - di_dth * r3 / a33) / den
            dEp = (a_par * dEn - r1) / a11
            dth = (-r3 - a32 * dEn) / a33
            if dEp > 0.1 or dEp < -0.1 or dEn > 0.1 or dEn < -0.1:
                # damp: BV exponentials punish long Newton steps
                sc = 0.1 / max(abs(dEp), abs(dEn))
                dEp *= sc
                dEn *= sc
                dth *= sc
            Ep += dEp
            En += dEn
            th_new = th + dth
            if th_new < 0.0:
                th_new = 0.5 * th
            elif th_new > 1.0:
                th_new = 0.5 * (th + 1.0)
            dth = th_new - th
            th = th_new
            if -tol_V < dEp < tol_V and -tol_V < dEn < tol_V and -tol_th < dth < tol_th:
                break
        else:
            if guess is not None:
                return self._solve(dt, V_app, c_src, g_par)
            raise FloatingPointError(f"cell Newton did not converge (dt={dt} s, V_app={V_app})")
        # currents at the converged point: first order in the last (sub-tolerance) step, whose
        # square is below the rounding of the currents
        Ip += dIp * dEp
        i_rev += di_dE * dEn + di_dth * dth
        i_form += dform_dE * dEn
        V = Ep - En + Rs * Ip
        return Ep, En, th, Ip, i_rev, i_form, V

    def _commit(self, dt: float, Ep: float, En: float, th: float, i_cell: float, i_rev: float,
                i_form: float, V: float) -> None:
        FA = self._FA
        if self._thin_layer:
            # integrate the pool from the kinetics (exact charge bookkeeping); theta agrees to Newton tolerance
            n_rev = self.n_rev_mol_per_m2 + dt * i_rev / FA
            self.n_rev_mol_per_m2 = 0.0 if n_rev < 0.0 else n_rev  # max(n_rev, 0.0)
            if self.transport is not None:
                # the transport carries the formed electrode; the reversible Li is the thin layer's
                self._pending_flux_mol += dt * i_form / FA
                self._pending_dt += dt
                if self._grows:
                    self._grow_pending()
                if self._pending_dt >= self.params.transport_dt_s - 1e-9:
                    self.sync_transport()
        else:
            assert self.transport is not None
            self.transport.step((i_rev + i_form) / FA, dt)
        self.formation_charge_C += i_form * dt
        self.faradaic_rev_charge_C += i_rev * dt
        q_abs = (i_rev if i_rev >= 0.0 else -i_rev) * dt
        self.throughput_C += q_abs
        # count completed reversals of the reversible current (hysteresis: 1 % of Gamma_inf F A)
        sgn = 1 if i_rev > 0 else -1
        if sgn != self._rev_sign:
            self._rev_since += q_abs
            if self._rev_since > self._rev_hysteresis_C:
                if self._rev_sign != 0:
                    self.reversals += 1
                self._rev_sign = sgn
                self._rev_since = 0.0
        else:
            self._rev_since = 0.0
        self.E_pos_V, self.E_neg_V, self.V_term_V = Ep, En, V
        self.i_cell_A, self.i_rev_A, self.i_form_A = i_cell, i_rev, i_form
        self._theta_solved = th
        self.time_s += dt

    def sync_transport(self) -> None:
        """Hand the Faradaic Li accumulated since the last transport step to the transport
        (thin_layer mode batches it in steps of up to transport_dt_s; exact in total charge)."""
        if self.transport is None or self._pending_dt <= 0:
            return
        self.transport.step(self._pending_flux_mol / self._pending_dt, self._pending_dt)
        self._pending_flux_mol = 0.0
        self._pending_dt = 0.0
        if self._grows:
            self._update_growth()

    # ---------------------------------------------------------------- inspection / checkpoints
    def ground_truth(self) -> dict[str, float]:
        """Hidden state for tests and dry-run comparison (SI units, potentials vs Li)."""
        self.sync_transport()
        p = self.params
        gamma, rct, w = self._history()
        th = self.theta
        U_neg = isotherm_U_V(th, p.E0_neg_V, w, self._f)
        out = {
            "time_s": self.time_s,
            "theta": th,
            "theta_s": self.transport.surface_fraction if self.transport is not None else float("nan"),
            "charge_passed_C": self.charge_passed_C,
            "faradaic_reversible_charge_C": self.faradaic_rev_charge_C,
            "formation_charge_C": self.formation_charge_C,
            "formed_thickness_m": self.formed_thickness_m(),
            "gamma_mol_per_m2": gamma,
            "R_ct_neg_ohm_m2": rct,
            "omega_RT": w,
            "reversals": float(self.reversals),
            "U_neg_V": U_neg,
            "E_neg_V": self.E_neg_V,
            "E_pos_V": self.E_pos_V,
            "eta_pos_V": self.E_pos_V - p.U_pos_V,
            "eta_neg_V": U_neg - self.E_neg_V,
            "open_circuit_V": p.U_pos_V - U_neg,
            "terminal_V": self.V_term_V,
            "cell_current_A": self.i_cell_A,
            "reversible_current_A": self.i_rev_A,
            "formation_current_A": self.i_form_A,
        }
        if self.transport is not None:
            out["excess_Li_mol_per_m2"] = self.transport.excess_mol_per_m2
        return out

    def state_dict(self) -> dict[str, Any]:
        """Plain-Python state for checkpointing (transport included)."""
        keys = ("time_s", "charge_passed_C", "faradaic_rev_charge_C", "formation_charge_C", "throughput_C",
                "reversals", "_rev_sign", "_rev_since", "E_pos_V", "E_neg_V", "V_term_V",
                "i_cell_A", "i_rev_A", "i_form_A", "n_rev_mol_per_m2", "_pending_flux_mol", "_pending_dt",
                "last_tripped", "last_current_A")
        state: dict[str, Any] = {"params": self.params.model_dump(), **{k: getattr(self, k) for k in keys}}
        state["transport"] = self.transport.state_dict() if self.transport is not None else None
        state["rng"] = self.rng.bit_generator.state if self.rng is not None else None
        return state

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> "Cell":
        params = CellParameters.model_validate(state["params"])
        transport = LiTransport.from_state_dict(state["transport"]) if state["transport"] is not None else None
        rng = None
        if state.get("rng") is not None:
            rng = np.random.default_rng()
            rng.bit_generator.state = state["rng"]
        cell = cls(params, transport=transport, rng=rng)
        for k, v in state.items():
            if k not in ("params", "transport", "rng"):
                setattr(cell, k, v)
        if cell._grows:
            cell._grow_pending()  # the restored batch's formed Li counts, as it did before the save
        return cell
