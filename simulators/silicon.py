"""Si nanoparticle cluster lithiated against a LiOx@Li solid electrolyte ([P3], seed 004).

The electrochemical cell and the sample of the ``si_nanoparticle`` preset in one object, because here
the geometry *is* the state: lithiation moves a reaction front into each crystalline particle and the
particle swells, so what the slit sees follows from the front positions.

Geometry along the slit (sample y, physics-seed-systems.md A.5): LiOx (Li2O) on the needle for y < 0,
then a chain of ``n_particles`` Si particles touching each other along +y (the first touches the
electrolyte at y = 0), then vacuum. Across the 200 nm slit width the cluster is taken as a row of
touching particles, so the beam crosses, per slit row at distance u from a particle centre, the
across-slit mean chord ``pi (R^2 - u^2) / (2 R)`` of that particle [est geometry]; the core-shell split
uses the same rule with the core radius (A.5 line profile). Particles push their neighbours away as
they swell (the needle stays put), so the cluster's extent along the slit grows.

Lithiation of c-Si (A.2, [S:MCD12], [S:PHA12]): a sharp two-phase front between the c-Si core and an
a-Li_x Si shell of fixed composition x_s (3.5 [est], A.2: keep the shell amorphous a-Li~3.5Si), moving
inward at::

    v_rxn = k_f 2 sinh(alpha f eta_eff),   eta_eff = -V - eta_onset - eta_s0 xi    (v = 0 if eta_eff <= 0)
    v     = 1 / (1/v_rxn + delta / (g D))                                       (supply through the shell)

with -V the cathodic bias on the Si, eta_onset the bias below which nothing reacts ([P3]: no
expansion until -0.2 V), xi the particle's lithiated volume fraction (stress retards the front,
[S:JIA15]), delta the Li path from the electrolyte contact to the front (own shell plus the
diameters of the particles in between, through which Li reaches particles that do not touch the
electrolyte, [P3]), D = 5e-12 cm^2/s [P3] and g the fraction of the shell composition that drives
diffusion [est]. ``k_f`` is set by the front speed ``v_ref`` at ``eta_ref`` (table F: 1.5 nm/s [est]).

Concentration (one definition): x = Li per Si of a phase, and Li atoms per volume = x / Vm(x) with
the molar volume ``Vm(x) = 12.06 + 9.03 x`` cm^3/mol Si (A.1 [derived]). Volume, density, plasmon energy
and thickness follow x: Li15Si4 (x = 3.75) is V/V0 = 3.81 (+281 %), the linear factor 1.56.

Current: i = -F dN_Li/dt (lithiation is cathodic at the Si) + V/R_leak + C_stray dV/dt + beam-induced
current (delta_SE x I_beam while the beam is on, C.4 [est]). 15.7 pC per particle (A.2), i.e. ~pA:
the current is not the observable, the width is.

Simplifications (named): no delithiation (a positive bias stops the fronts; the shell keeps its Li),
no inter-particle redistribution after contact loss, spherical particles with isotropic fronts
(no <110> anisotropy), explicit Euler on the front radii (steps <= ``max_dt_s``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from insitem.simulators.current_control import CurrentControlled
from insitem.simulators.sample import (
    ATOMIC_MASS_g_mol,
    VACUUM,
    ColumnState,
    Material,
    column_from_phases,
)
from insitem.simulators.transport import FARADAY_C_PER_MOL

GAS_CONSTANT_J_PER_MOL_K = 8.314462618
VM_SI_M3_PER_MOL = 12.06e-6  # c-Si, A.1 [derived from rho 2.329 g/cm^3]
VM_LI_PARTIAL_M3_PER_MOL = 9.03e-6  # partial molar volume of Li in a-LixSi, A.1 [derived]


def molar_volume_m3_per_mol_si(x: float | np.ndarray) -> float | np.ndarray:
    """Vm(x) = 12.06 + 9.03 x cm^3 per mol Si (A.1): 45.9 cm^3/mol at x = 3.75 (V/V0 = 3.81)."""
    return VM_SI_M3_PER_MOL + VM_LI_PARTIAL_M3_PER_MOL * x


def volume_ratio(x: float | np.ndarray) -> float | np.ndarray:
    """V(x)/V0 = 1 + 0.749 x (A.1)."""
    return molar_volume_m3_per_mol_si(x) / VM_SI_M3_PER_MOL


def li_si_density_g_cm3(x: float) -> float:
    """rho(x) = (28.086 + 6.941 x) / Vm(x) (A.1): 2.33 -> 1.18 g/cm^3."""
    return (ATOMIC_MASS_g_mol["Si"] + ATOMIC_MASS_g_mol["Li"] * x) / (molar_volume_m3_per_mol_si(x) * 1e6)


def li_si_plasmon_eV(x: float, offset_eV: float = 0.1) -> float:
    """Ep(x) = 28.816 sqrt((4 + x)/Vm(x)) + offset + 0.25 x/3.75 eV (A.4, table F): 16.7 -> 12.2 eV."""
    vm_cm3 = molar_volume_m3_per_mol_si(x) * 1e6
    return 28.816 * math.sqrt((4.0 + x) / vm_cm3) + offset_eV + 0.25 * x / 3.75


def li_si_material(x: float) -> Material:
    """a-Li_x Si as a phase: its composition, density (A.1) and plasmon (A.4); width 3.7 -> 5 eV [est]."""
    return Material(
        name=f"a-Li{x:g}Si",
        formula={"Li": x, "Si": 1.0},
        density_g_cm3=li_si_density_g_cm3(x),
        plasmon_energy_eV=li_si_plasmon_eV(x),
        plasmon_width_eV=3.7 + (5.0 - 3.7) * x / 3.75,
        valence_states={"Si": -x},  # the Zintl anion: selects the shifted Si-L2,3 (eels.SI_L_ONSETS_eV)
    )


#: c-Si: 2.329 g/cm^3, Ep 16.7 eV [S:ABTEM295], FWHM 3.7 eV [est] (A.4)
C_SI = Material(name="c-Si", formula={"Si": 1.0}, density_g_cm3=2.329, plasmon_energy_eV=16.7, plasmon_width_eV=3.7,
                valence_states={"Si": 0.0})
#: LiOx electrolyte as Li2O: 2.013 g/cm^3, Ep 22.6 eV (A.4 [derived]), width 7 eV [est]
LI2O = Material(name="Li2O", formula={"Li": 2.0, "O": 1.0}, density_g_cm3=2.013, plasmon_energy_eV=22.6,
                plasmon_width_eV=7.0, o_k_prepeak=0.0)


class SiClusterParameters(BaseModel):
    """Parameters of the Si cluster (sources in the module docstring and physics-seed-systems.md A)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "si_nanoparticle"
    particle_radius_m: float = Field(default=50e-9, gt=0, description="pristine radius r0 ([P3] ~100 nm particles) [est]")
    n_particles: int = Field(default=3, ge=1, le=20, description="particles in the chain along the slit [est]")
    electrolyte_thickness_m: float = Field(default=100e-9, gt=0, description="LiOx path along the beam [est]")
    shell_x: float = Field(default=3.5, gt=0, le=3.75, description="Li per Si of the a-LixSi shell (A.2) [est]")
    temperature_K: float = Field(default=298.15, gt=0)
    alpha: float = Field(default=0.5, gt=0, lt=1, description="transfer coefficient of the front reaction (A.2)")
    onset_overpotential_V: float = Field(
        default=0.19, ge=0, description="cathodic bias below which no front moves ([P3]: none until -0.2 V) [est]"
    )
    front_velocity_ref_m_per_s: float = Field(default=1.5e-9, gt=0, description="v at eta_ref (table F: 1.5 nm/s) [est]")
    eta_ref_V: float = Field(default=0.01, gt=0, description="eta_eff at which v_ref holds (the -0.2 V hold) [est]")
    stress_overpotential_V: float = Field(default=0.005, ge=0, description="eta_s0: retardation at full lithiation [est]")
    D_m2_per_s: float = Field(default=5e-16, gt=0, description="D(Li in a-LixSi) 5e-12 cm^2/s [P3]")
    diffusion_drive_fraction: float = Field(default=0.1, gt=0, le=1, description="g: shell gradient / shell x [est]")
    stray_capacitance_F: float = Field(default=50e-12, ge=0, description="cables/holder (physics.md 3.6) [est]")
    leakage_resistance_ohm: float = Field(default=1e12, gt=0, description="holder leakage (C.1) [est]")
    beam_induced_yield: float = Field(default=0.03, ge=0, description="delta_SE x I_beam while on (C.4) [est]")
    max_dt_s: float = Field(default=0.25, gt=0, description="longest explicit front step")

    @property
    def f_per_V(self) -> float:
        return FARADAY_C_PER_MOL / (GAS_CONSTANT_J_PER_MOL_K * self.temperature_K)

    @property
    def k_f_m_per_s(self) -> float:
        return self.front_velocity_ref_m_per_s / (2.0 * math.sinh(self.alpha * self.f_per_V * self.eta_ref_V))


class SiCluster(CurrentControlled):
    """The Si cluster as the world's cell (``advance``/``advance_sweep``) and its sample (``column_state``)."""

    transport = None  # no c/c0 field: the state is the front radii

    def __init__(self, params: SiClusterParameters | None = None) -> None:
        self.params = params or SiClusterParameters()
        p = self.params
        self.core_radius_m = np.full(p.n_particles, p.particle_radius_m)
        self.shell = li_si_material(p.shell_x)
        self.phases: tuple[Material, ...] = (VACUUM, LI2O, C_SI, self.shell)  # persistent: the EELS cache key
        self.time_s = 0.0
        self.charge_passed_C = 0.0
        self.faradaic_charge_C = 0.0
        self.V_term_V = 0.0
        self.i_cell_A = 0.0
        self.last_tripped = False

    # ------------------------------------------------------------------------------- geometry
    @property
    def outer_radius_m(self) -> np.ndarray:
        """R^3 = r_c^3 + (r0^3 - r_c^3) V(x_s)/V0 (A.1 volume law on the shell)."""
        r0 = self.params.particle_radius_m
        rc = self.core_radius_m
        return np.cbrt(rc**3 + (r0**3 - rc**3) * volume_ratio(self.params.shell_x))

    @property
    def centres_m(self) -> np.ndarray:
        R = self.outer_radius_m
        return np.cumsum(2 * R) - R

    @property
    def cluster_width_m(self) -> float:
        """Extent of the cluster along the slit (sum of the particle diameters)."""
        return float(2 * self.outer_radius_m.sum())

    @property
    def lithiated_fraction(self) -> np.ndarray:
        """xi per particle: reacted Si volume fraction 1 - (r_c/r0)^3."""
        return 1.0 - (self.core_radius_m / self.params.particle_radius_m) ** 3

    @property
    def li_mol(self) -> float:
        r0 = self.params.particle_radius_m
        n_si = (4 / 3) * math.pi * float(np.sum(r0**3 - self.core_radius_m**3)) / VM_SI_M3_PER_MOL
        return self.params.shell_x * n_si

    def phase_paths_m(self, y_m: np.ndarray) -> np.ndarray:
        """Path length of (vacuum, Li2O, c-Si, a-LixSi) along the beam for each slit position y."""
        y = np.asarray(y_m, dtype=float)
        L = np.zeros((y.size, 4))
        L[:, 1] = np.where(y < 0, self.params.electrolyte_thickness_m, 0.0)
        R = self.outer_radius_m
        for c, Rk, rc in zip(self.centres_m, R, self.core_radius_m):
            u2 = (y - c) ** 2
            outer = np.where(y >= 0, np.pi * np.clip(Rk**2 - u2, 0, None) / (2 * Rk), 0.0)
            core = np.where(y >= 0, np.pi * np.clip(rc**2 - u2, 0, None) / (2 * Rk), 0.0)
            L[:, 2] += core
            L[:, 3] += outer - core
        return L  # the vacuum column stays 0: a row with nothing in it has t = 0

    def column_state(self, y_m: np.ndarray, *, li_retained: float = 1.0, E0_eV: float = 300e3,
                     alpha_rad: float = 0.5e-3, beta_rad: float = 10e-3) -> ColumnState:
        return column_from_phases(y_m, self.phase_paths_m(y_m), self.phases, li_retained=li_retained, E0_eV=E0_eV,
                                  alpha_rad=alpha_rad, beta_rad=beta_rad)

    def li_per_si_profile(self, y_m: np.ndarray) -> np.ndarray:
        """x = Li per Si of the column at each y (0 in c-Si, x_s in the shell; NaN without Si)."""
        col = self.column_state(y_m)
        si = col.areal_density_per_m2["Si"]
        li = np.where(col.phase_paths()[:, 1] > 0, 0.0, col.areal_density_per_m2["Li"])
        return np.where(si > 0, li / np.where(si > 0, si, 1.0), np.nan)

    # ------------------------------------------------------------------------------- kinetics
    def front_velocity_m_per_s(self, bias_V: float) -> np.ndarray:
        """Inward front speed of each particle at cell bias ``bias_V`` (negative lithiates)."""
        p = self.params
        xi = self.lithiated_fraction
        eta = -bias_V - p.onset_overpotential_V - p.stress_overpotential_V * xi
        v_rxn = p.k_f_m_per_s * 2.0 * np.sinh(p.alpha * p.f_per_V * np.clip(eta, 0.0, None))
        R = self.outer_radius_m
        before = np.concatenate([[0.0], np.cumsum(2 * R)[:-1]])
        delta = (R - self.core_radius_m) + before
        supply = p.diffusion_drive_fraction * p.D_m2_per_s / np.maximum(delta, 1e-12)
        v = np.where(v_rxn > 0, 1.0 / (1.0 / np.maximum(v_rxn, 1e-300) + 1.0 / supply), 0.0)
        return np.where(self.core_radius_m > 0, v, 0.0)

    def advance(self, dt_s: float, applied_V: float | None, compliance_A: float, beam_current_A: float = 0.0) -> Any:
        from insitem.simulators.electrochemistry import CellStep

        if dt_s <= 0:
            raise ValueError("dt_s must be > 0")
        i = self._advance(dt_s, applied_V, beam_current_A)
        tripped = applied_V is not None and abs(i) > compliance_A
        if tripped:
            i = math.copysign(compliance_A, i)
        self.last_tripped = tripped
        return CellStep(i, self.V_term_V, tripped, i * dt_s)

    def _advance(self, dt_s: float, applied_V: float | None, beam_A: float) -> float:
        p = self.params
        V_old = self.V_term_V
        V = V_old if applied_V is None else applied_V
        n = max(1, math.ceil(dt_s / p.max_dt_s))
        h = dt_s / n
        li0 = self.li_mol
        for _ in range(n):
            v = self.front_velocity_m_per_s(V) if applied_V is not None else np.zeros_like(self.core_radius_m)
            self.core_radius_m = np.maximum(self.core_radius_m - v * h, 0.0)
        q_F = -(self.li_mol - li0) * FARADAY_C_PER_MOL  # cathodic: negative current at the Si
        i_beam = p.beam_induced_yield * beam_A
        if applied_V is None:
            i = 0.0
        else:
            i = q_F / dt_s + V / p.leakage_resistance_ohm + p.stray_capacitance_F * (V - V_old) / dt_s + i_beam
        self.faradaic_charge_C += q_F
        self.charge_passed_C += i * dt_s
        self.V_term_V = V
        self.i_cell_A = i
        self.time_s += dt_s
        return i

    # ------------------------------------------------------------------------------- inspection
    def ground_truth(self) -> dict[str, float]:
        xi = self.lithiated_fraction
        return {
            "time_s": self.time_s,
            "theta": float(np.mean(xi)),  # lithiated Si fraction of the cluster
            "cluster_width_m": self.cluster_width_m,
            "li_mol": self.li_mol,
            "charge_passed_C": self.charge_passed_C,
            "faradaic_charge_C": self.faradaic_charge_C,
            "terminal_V": self.V_term_V,
            **{f"lithiated_fraction_{k}": float(x) for k, x in enumerate(xi)},
        }

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "si_cluster", "params": self.params.model_dump(), "core_radius_m": self.core_radius_m.tolist(),
                **{k: getattr(self, k) for k in ("time_s", "charge_passed_C", "faradaic_charge_C", "V_term_V",
                                                  "i_cell_A", "last_tripped")}}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> "SiCluster":
        obj = cls(SiClusterParameters.model_validate(state["params"]))
        obj.core_radius_m = np.asarray(state["core_radius_m"], dtype=float)
        for k in ("time_s", "charge_passed_C", "faradaic_charge_C", "V_term_V", "i_cell_A", "last_tripped"):
            setattr(obj, k, state[k])
        return obj
