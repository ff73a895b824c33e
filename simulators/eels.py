"""Spatially-resolved EELS spectrum synthesis: expected electrons per channel for every slit position.

Pipeline (physics.md §1.10), per row of a :class:`~insitem.simulators.sample.ColumnState`:

1. Zero-loss peak Z (§1.2; cold-FEG Fowler-Nordheim shape or Schottky EMG, broadened to the effective
   FWHM, unit area), I0 = N exp(-t/lambda_all) (electrons that lost no energy; N incident electrons).
2. Valence single scattering p_v (Drude loss function x ln(1 + beta^2/theta_E^2), §1.3, plus the
   material's interband oscillators (`valence_ssd`: the FePO4 5 eV peak, seed §B.1) and the shallow
   M/N/O edges of §1.3/§1.6 as saw-tooth shapes), unit area, scaled to kappa = t/lambda - (core-edge
   integrals at the parent composition) so that the total single scattering equals t/lambda (§1.4).
   Columns of several phases (``ColumnState.phase_t_over_lambda``: the Si cluster, the lamella) sum
   every phase's p_v in every row with kappa_rp = L_rp/lambda_p - (core edges of p's atoms on that
   path) (`_phase_kappa`; seed §A.5 line profile, two-phase rule [S:LAF06]; decision 0027).
3. Core edges (§1.5, §1.8): hydrogenic K/L cross sections (m^2/eV per atom) of every element present,
   with ELNES for Li-K, Ti-L2,3 (Ti4+ four white lines, Ti3+ merged and shifted) and O-K (pre-peak,
   peaks a and b), multiplied by areal densities (atoms/m^2). Near-edge structure follows the Bethe
   sum rule (seed §D.2): K-edge peaks borrow their strength from the continuum, so that onset - 5 eV
   to onset + 50 eV integrates to the hydrogenic edge; Ti white-line areas are proportional to the
   empty 3d states (10 for Ti4+, 9 for Ti3+) relative to the hydrogenic continuum 50-100 eV above
   L3 (Pearson et al. 1993). Sources: docs/physics-sources.md.
4. Plural scattering by the Fourier-log relation J = I0 Z ⊗ exp*(s) (§1.4). Two evaluations:
   * ``method="fourier_log"`` (default when the window contains the ZLP, and always for columns of
     several phases): exact per-row J_hat = I0 Z_hat exp(s_hat); the sum over a window that contains
     everything is I0 exp(t/lambda). Rows with the same s (a uniform layer, vacuum) are computed once.
   * ``method="fourier_ratio"`` (default for core-loss windows): each edge is convolved with the unit
     low-loss spectrum of its layer, J_K = s_K ⊗ J_v (§1.4 Fourier-ratio form), and the valence
     spectrum J_v of the layer's parent composition (valence and all its edges, exact Fourier-log) is
     cached per layer; rows whose composition differs (Li, Ti3+, R, pre-peak) add the edge-weight
     differences convolved with J_v (first order: the neglected term is second order in the change).
5. Chromatic blur along y (§1.7): a ray scattered at theta lands r = Cc theta |E - E_f|/E0* from its
   object point (E0* = 244.5 keV at 300 kV); weighted by the Lorentzian angular distribution of the
   loss (theta_E = E/2 gamma T) cut at beta, the profile along the slit is a cusp with a hard edge at
   the extreme ray (rms 12.0 nm at 460 eV for Cc = 2 mm, beta = 10 mrad). E is the loss of each
   channel: every electron detected at loss E, whatever scattered it (plasmon, edge, plural), is
   defocused by the same amount, so the blur acts on the finished per-row spectra channel by
   channel (transfer function of the profile along the rows; edge rows repeated beyond the field).
   A window that holds the zero-loss peak and one that does not therefore see the same blur at the
   losses they share (decision 0012).
6. Energy shifts: non-isochromaticity dE(y) (§1.9; default 0.1 eV peak-to-peak, a parameter) plus the
   exposure's drift (mean shift by linear interpolation, spread by convolution with the histogram of
   the drift samples).

Speed: everything that depends only on composition, optics and the energy axis (FFTs, edge shapes,
templates = shape ⊗ low-loss kernel) is cached per (axis, sample); a call builds a weight matrix
(rows x templates, cheap), multiplies it with the template matrix, shifts rows and crops.
The O-K peak b, whose position moves with R(c), is a bank of templates 0.5 eV apart with linear
weights (exact for the centroid; FWHM 8 eV >> 0.5 eV).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import fft as sfft
from scipy import special
from scipy.ndimage import convolve1d
from scipy.optimize import brentq

from insitem.simulators.cross_sections import (
    dsigma_dE,
    effective_collection_angle_rad,
    sigma_integrated,
    theta_E_rad,
)
from insitem.simulators.sample import AVOGADRO, ColumnState, Material
from insitem.simulators.blas import one_blas_thread

#: Hydrogenic core edges per element: (shell, onset eV, L1 onset eV). Onsets: physics.md §1.6 table
#: (Elam [S:XRDB]) where given; Li-K 55 eV (exspy DB), Ti L3 456 / L1 560.9 eV; others Elam [est].
CORE_EDGES: dict[str, tuple[str, float, float | None]] = {
    "Li": ("K", 55.0, None),
    "C": ("K", 284.2, None),
    "O": ("K", 529.0, None),
    "Al": ("L", 72.5, 117.8),
    "Si": ("L", 99.2, 149.7),
    "P": ("L", 135.0, 189.3),
    "Ti": ("L", 456.0, 560.9),
    "V": ("L", 512.1, 626.7),
    "Fe": ("L", 708.1, 844.6),
    "Co": ("L", 779.4, 925.1),
    "Ge": ("L", 1217.0, 1414.6),
}
ATOMIC_NUMBER = {"Li": 3, "C": 6, "O": 8, "Al": 13, "Si": 14, "P": 15, "Ti": 22, "V": 23, "Fe": 26,
                 "Co": 27, "Ge": 32}

#: Shallow edges with a delayed maximum (centrifugal barrier of the 3p -> 3d/continuum channel):
#: label -> energy of the maximum, eV. Ti M2,3 in Ti oxides peaks near 47 eV, ~14 eV above its
#: 32.6 eV onset (physics.md §1.8 [est, recalled]; the 3p semicore losses of rutile up to 60 eV are
#: measured and computed in Vast et al., Phys. Rev. Lett. 88 (2002) 037601). Other shallow edges
#: rise as saw-tooth steps.
DELAYED_SHALLOW_EDGES_eV: dict[str, float] = {"Ti M2,3": 47.0}



@dataclass(frozen=True)
class WhiteLines:
    """L2,3 white lines of one 3d metal in one formal oxidation state: lines as (centre eV, FWHM eV,
    share of its L3 or L2 area); their total area follows the Ti rule (`ti_white_line_per_hole` x
    d holes x the hydrogenic L continuum 50-100 eV above L3, Pearson et al. 1993, seed §D.2)."""

    d_holes: float
    L3: tuple[tuple[float, float, float], ...]
    L2: tuple[tuple[float, float, float], ...]
    L3_over_L2: float


#: White lines by metal and formal oxidation state (the row's mean state interpolates linearly between
#: the two nearest; outside the table the nearest). Fe (physics-seed-systems.md B.1): Fe2+ (d6, 4 holes)
#: L3 sharp maximum 707.8 eV + weaker 710.5 eV, Fe3+ (d5, 5 holes) maximum 709.5 eV with a preceding
#: 708.0 eV peak [S:VAK98]; shares, widths, L2 positions 720.5 / 722.5 eV and L3/L2 4.0 / 5.2 (the trend
#: of [S:VAK98], higher for Fe3+) [est]. V3+ (d2, 8 holes; B.2): L3 maximum 515.5 eV [est], L2 ~522-524 eV
#: [est]; L3/L2 1.0 [est]. No shipped protocol's window holds Fe-L or V-L; these shapes matter only to
#: a protocol that adds one.
TM_WHITE_LINES: dict[str, dict[int, WhiteLines]] = {
    "Fe": {
        2: WhiteLines(4.0, ((707.8, 1.3, 0.75), (710.5, 2.0, 0.25)), ((720.5, 2.5, 1.0),), 4.0),
        3: WhiteLines(5.0, ((708.0, 1.2, 0.25), (709.5, 1.6, 0.75)), ((722.5, 2.5, 1.0),), 5.2),
    },
    "V": {
        3: WhiteLines(8.0, ((515.5, 2.0, 1.0),), ((522.8, 2.5, 1.0),), 1.0),
    },
}


#: Si-L2,3 by formal oxidation state of Si (physics-seed-systems.md A.5): L3 onset 99.8 eV in c-Si
#: (state 0) [est, commonly quoted; Elam binding energy 99.2 eV], shifted down 0.8 eV in Li3.75Si
#: (state -3.75, the Zintl anion; "shift ~0.5-1 eV", linear in x) [est]; L2 0.6 eV above L3 [S:XRDB].
SI_L_ONSETS_eV: dict[float, float] = {0.0: 99.8, -3.75: 99.0}
SI_L_SPIN_ORBIT_eV = 0.6

#: Elements whose L edge depends on the row's mean oxidation state: the tabulated states per element.
STATE_EDGES: dict[str, list[float]] = {el: sorted(float(k) for k in t) for el, t in TM_WHITE_LINES.items()}
STATE_EDGES["Si"] = sorted(SI_L_ONSETS_eV)


def state_component(name: str, element: str | None) -> float | None:
    """The oxidation state of a component named "<element> L <state>", else None."""
    parts = name.split()
    if element in STATE_EDGES and len(parts) == 3 and parts[0] == element and parts[1] == "L":
        return float(parts[2])
    return None


def white_line_state_weights(states: list[float], ox: np.ndarray) -> dict[float, np.ndarray]:
    """Weight of each tabulated oxidation state for mean states ``ox`` (NaN: the lowest state): linear
    between the two nearest, clipped to the table's range (a two-phase Fe2+/Fe3+ row is the
    path-weighted mix of the two end members)."""
    st = sorted(states)
    x = np.clip(np.nan_to_num(np.asarray(ox, dtype=float), nan=float(st[0])), st[0], st[-1])
    out = {s: np.zeros(x.shape) for s in st}
    if len(st) == 1:
        out[st[0]][:] = 1.0
        return out
    k = np.clip(np.searchsorted(st, x, side="right") - 1, 0, len(st) - 2)
    lo, hi = np.array(st)[k], np.array(st)[k + 1]
    f = (x - lo) / (hi - lo)
    for i, s in enumerate(st[:-1]):
        out[s] += np.where(k == i, 1.0 - f, 0.0)
        out[st[i + 1]] += np.where(k == i, f, 0.0)
    return out


#: The element that electrochemistry inserts into host layers whatever their parent formula.
INSERTED_ELEMENT = "Li"

FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
#: Loss range (eV) over which t/lambda is split into valence and core-edge scattering and the valence
#: shape has unit area (losses beyond are neglected: the Drude tail beyond 2 keV is < 1e-4 of it), and
#: the step (eV) of that integration grid.
NORM_RANGE_EV = 2000.0
NORM_STEP_EV = 0.25


#: Area of FePO4's O-K pre-edge (528.5 eV, FWHM 1.5 eV), as a fraction of the O-K cross-section over
#: 40 eV: physics-seed-systems.md §D.1 gives 10-20 % of the 528-545 eV area [est]; the middle, 15 %,
#: of this model's O-K without pre-peaks over 528-545 eV (0.397 sigma_O(40 eV), measured on the
#: default parameters by tests/simulators/test_fe3_o_k_prepeak.py) is 0.0595.
O_FE3_PREPEAK_AREA = 0.0595


class EELSParameters(BaseModel):
    """Spectrometer, microscope and ELNES parameters (defaults: physics.md §6.1 and §1.8)."""

    model_config = ConfigDict(extra="forbid")

    E0_eV: float = Field(default=300e3, gt=0, description="beam energy (§6.1)")
    beta_rad: float = Field(default=10e-3, gt=0, description="collection semi-angle (§6.1)")
    alpha_rad: float = Field(default=0.5e-3, ge=0, description="convergence semi-angle (§6.1)")
    # zero-loss peak (§1.2)
    gun: Literal["cfeg", "schottky"] = "cfeg"
    zlp_fwhm_eV: float | None = Field(default=None, description="None: 0.45 eV (cfeg) / 0.8 eV (schottky), §1.2")
    zlp_tail_eV: float = Field(default=0.15, gt=0, description="FN tail d (cfeg) / EMG tau (schottky), §1.2")
    emitter_kT_eV: float = Field(default=0.0257, gt=0, description="kT at room temperature, §1.2")
    # shallow-edge saw-tooth rise width [est]
    shallow_edge_rise_eV: float = Field(default=3.0, gt=0)
    # Li-K ELNES (§1.8) [est]: step 57 eV/1 eV, peak 61.5 eV FWHM 3, broad 70 eV FWHM 10, join at 75 eV
    li_step_eV: float = 57.0
    li_step_width_eV: float = 1.0
    li_peaks: list[tuple[float, float, float]] = Field(
        default=[(61.5, 3.0, 0.25), (70.0, 10.0, 0.25)],
        description="(centre eV, FWHM eV, area as a fraction of sigma(onset, 40 eV)) [est]",
    )
    li_join_eV: tuple[float, float] = (65.0, 75.0)
    # Ti-L2,3 (§1.8; sources in docs/physics-sources.md)
    ti4_L3_eV: tuple[float, float] = Field(
        default=(457.0, 459.0), description="Ti4+ L3 t2g / eg centres (§1.8 on the [Y14] scale, O-K threshold 529.0)"
    )
    ti_spin_orbit_eV: float = Field(default=5.4, gt=0, description="L2 - L3 spacing of Ti oxides (rutile/anatase)")
    ti4_fwhm_eV: tuple[float, float, float, float] = (0.9, 1.5, 1.6, 2.2)
    ti_t2g_eg_area: float = Field(default=0.7, description="t2g:eg area within each L (Ti4+) [est]")
    ti4_L2_L3: float = Field(default=1.30, description="L2/L3 integrated ratio, Ti4+ [Y14]")
    ti3_shift_eV: float = Field(default=-1.7, description="Ti3+ relative to Ti4+ eg positions [Y14]")
    ti3_fwhm_eV: tuple[float, float] = (2.0, 2.6)
    ti3_L2_L3: float = Field(default=1.25, description="L2/L3 integrated ratio, Ti3+ [Y14]")
    ti_d_holes: tuple[float, float] = Field(default=(10.0, 9.0), description="empty 3d states of Ti4+ (d0) / Ti3+ (d1)")
    ti_white_line_per_hole: float = Field(
        default=0.10, ge=0,
        description="white-line area (L3+L2) per 3d hole / hydrogenic L continuum 50-100 eV above L3 "
        "(Pearson et al. 1993 normalisation) [est: sensitivity in docs/physics-sources.md]",
    )
    k_sum_rule_window_eV: float = Field(
        default=50.0, gt=10.0, description="K edges: ELNES + continuum integrate to the hydrogenic edge up to onset + this"
    )
    ti_step_width_eV: float = 1.0
    si_step_width_eV: float = Field(default=0.5, gt=0, description="Si-L2,3 arctan step width (A.5) [est]")
    ti_join_eV: tuple[float, float] = Field(default=(30.0, 40.0), description="continuum join above onset")
    # O-K (§1.8)
    o_threshold_eV: float = 529.0
    o_step_eV: float = Field(default=530.5, description="arctan step centre (529-532 eV)")
    o_step_width_eV: float = 1.0
    o_prepeaks: list[tuple[float, float, float]] = Field(
        default=[(530.5, 1.2, 0.08), (533.0, 1.8, 0.10)],
        description="(centre, FWHM, area fraction of sigma_O(40 eV)) at c = c0 [est]",
    )
    o_fe3_prepeak: tuple[float, float, float] = Field(
        default=(528.5, 1.5, O_FE3_PREPEAK_AREA),
        description="(centre, FWHM, area fraction of sigma_O(40 eV)) of the single O-K pre-edge of O 2p - Fe3+ 3d "
                    "states in FePO4 (physics-seed-systems.md §B.1, §D.1 [S:KIN10]; area [est])",
    )
    o_peak_a: tuple[float, float, float] = (538.0, 4.0, 0.25)
    o_peak_b_constant_eV_nm2: float = Field(default=2.820, description="(E_b - 529.0) R^2 [Y14]")
    o_parent_R_nm: float = Field(default=0.280, gt=0, description="O-O distance of the parent [Y14] (sum-rule reference)")
    o_peak_b_fwhm_eV: float = 8.0
    o_peak_b_area: float = 0.25
    o_peak_b_bank_eV: tuple[float, float, float] = Field(
        default=(555.0, 569.0, 0.5), description="peak-b template bank: first, last, step (eV)"
    )
    # geometry / optics (§1.7, §1.9)
    Cc_m: float = Field(default=2e-3, ge=0, description="chromatic aberration coefficient (§1.7) [est]")
    chromatic_relativistic: bool = Field(
        default=True, description="r = Cc theta E/E0* with the relativistic E0* (244.5 keV at 300 kV, §1.7); False: E0"
    )
    focus_loss_eV: float = Field(default=0.0, ge=0, description="loss the objective is focused for (§1.7: |E - E_f|)")
    nonisochromaticity_pp_eV: float = Field(
        default=0.1, ge=0, description="dE(y) peak-to-peak over the rows (issue: < 0.1 eV; physics §1.9: 0.3)"
    )
    nonisochromaticity_linear_fraction: float = Field(default=0.5, ge=0, le=1)
    drift_eV_per_s: float = Field(default=0.1 / 60, description="linear energy drift (§1.9)")
    drift_random_walk_eV_per_sqrt_s: float = Field(default=0.02, ge=0, description="(§1.9)")

    @property
    def zlp_fwhm(self) -> float:
        if self.zlp_fwhm_eV is not None:
            return self.zlp_fwhm_eV
        return 0.45 if self.gun == "cfeg" else 0.8


def electrons_per_row(dose_rate_e_per_m2_s: float, row_length_m: float, slit_width_m: float, exposure_s: float) -> float:
    """Incident electrons on one spectrum-image row = dose rate x row length x slit width x exposure (§5).

    10 e/A^2/s (1e21 e/m^2/s), 5.7 nm row, 200 nm slit, 30 s -> 3.4e7 electrons (§1.5).
    """
    return dose_rate_e_per_m2_s * row_length_m * slit_width_m * exposure_s


def energy_drift_samples(
    params: EELSParameters, exposure_s: float, t_start_s: float, rng: np.random.Generator, n: int = 32,
    start_shift_eV: float = 0.0,
) -> np.ndarray:
    """Energy shift samples (eV) at n equally spaced instants of one exposure: linear drift plus a
    random walk (§1.9), starting from ``start_shift_eV`` at ``t_start_s`` (drift clock origin 0)."""
    dt = exposure_s / n
    t = t_start_s + dt * (np.arange(n) + 0.5)
    walk = np.cumsum(rng.normal(0.0, params.drift_random_walk_eV_per_sqrt_s * math.sqrt(dt), n))
    return start_shift_eV + params.drift_eV_per_s * (t - t_start_s) + walk


# ------------------------------------------------------------------------------------------ chromatic blur


def chromatic_energy_eV(params: EELSParameters) -> float:
    """Beam energy in the chromatic displacement r = Cc theta E / E0*: the relativistic
    E0* = E0 (1 + E0/2m0c^2)/(1 + E0/m0c^2) (244.5 keV at 300 kV, physics.md §1.7 / seed §E), or E0."""
    E0 = params.E0_eV
    if not params.chromatic_relativistic:
        return E0
    m = 511.0e3
    return E0 * (1 + E0 / (2 * m)) / (1 + E0 / m)


def _chromatic_lengths(loss_eV: np.ndarray, params: EELSParameters) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(C, theta_E, beta) per loss: a ray scattered at theta lands r = C theta from its object point,
    C = Cc |E - E_f| / E0* (m/rad)."""
    E = np.maximum(np.asarray(loss_eV, dtype=float), 0.0)
    C = params.Cc_m * np.abs(E - params.focus_loss_eV) / chromatic_energy_eV(params)
    C = np.where(E > 0, C, 0.0)
    return C, theta_E_rad(np.maximum(E, 1e-6), params.E0_eV), np.full(E.shape, params.beta_rad)


def chromatic_extreme_ray_m(loss_eV: np.ndarray, params: EELSParameters) -> np.ndarray:
    """R = Cc beta |E - E_f| / E0*, the largest displacement (m): 37.6 nm at 460 eV (§1.7)."""
    C, _, b = _chromatic_lengths(loss_eV, params)
    return C * b


def chromatic_rms_m(loss_eV: np.ndarray, params: EELSParameters) -> np.ndarray:
    """rms displacement along the slit (one Cartesian component), m (§1.7):
    sqrt(<theta^2>/2) C with <theta^2> = beta^2/ln(1 + beta^2/theta_E^2) - theta_E^2 for the
    Lorentzian 1/(theta^2 + theta_E^2) cut at beta. 12.0 nm at 460 eV, 14.2 nm at 532 eV."""
    C, te, b = _chromatic_lengths(loss_eV, params)
    t2 = b**2 / np.log1p(b**2 / te**2) - te**2
    return np.sqrt(t2 / 2) * C


def chromatic_profile(y_m: np.ndarray, loss_eV: float, params: EELSParameters) -> np.ndarray:
    """Projected blur profile g(y) along the slit (1/m, unit area) for one loss (§1.7):
    g = 2 atan(sqrt(R^2 - y^2)/sqrt(y^2 + a^2)) / (pi ln(1 + R^2/a^2) sqrt(y^2 + a^2)) for |y| < R,
    a = C theta_E, R = C beta: a cusp at 0 with a hard cut-off at R."""
    C, te, b = (float(v[0]) for v in _chromatic_lengths(np.array([loss_eV]), params))
    a, R = C * te, C * b
    y = np.abs(np.asarray(y_m, dtype=float))
    s = np.sqrt(y**2 + a**2)
    with np.errstate(invalid="ignore"):
        g = 2 * np.arctan(np.sqrt(np.maximum(R**2 - y**2, 0.0)) / s) / (math.pi * math.log1p(R**2 / a**2) * s)
    return np.where(y < R, g, 0.0)


def chromatic_transfer(freq_per_m: np.ndarray, loss_eV: np.ndarray, params: EELSParameters,
                       n_theta: int = 48, step_eV: float = 1.0) -> np.ndarray:
    """Transfer function of the chromatic blur along the slit, shape (losses, frequencies).

    The 1-D Fourier transform of the projected profile equals the 2-D transform of the radial one:
    G(f) = <J0(2 pi f C theta)> over the Lorentzian angular distribution cut at beta. With
    u = ln(theta^2 + theta_E^2) that distribution is uniform in u on [ln theta_E^2, ln(beta^2 +
    theta_E^2)], so G is a Gauss-Legendre mean over u. It is evaluated on a grid of losses
    ``step_eV`` apart and interpolated linearly (R changes by < 1 % per eV above 100 eV). 48 nodes
    agree with 96 to 1e-14 at 420-625 eV over the frequencies of 5.7 nm rows."""
    loss = np.asarray(loss_eV, dtype=float)
    f = np.asarray(freq_per_m, dtype=float)
    lo, hi = float(loss.min()), float(loss.max())
    Eg = np.linspace(lo, hi, max(2, int(math.ceil((hi - lo) / step_eV)) + 1))
    C, te, b = _chromatic_lengths(Eg, params)
    x, w = np.polynomial.legendre.leggauss(n_theta)
    x, w = 0.5 * (x + 1), 0.5 * w
    u0 = np.log(te**2)
    u1 = np.log(b**2 + te**2)
    theta = np.sqrt(np.exp(u0[:, None] + (u1 - u0)[:, None] * x[None, :]) - te[:, None] ** 2)  # (E, n)
    r = C[:, None] * theta
    G = np.einsum("ekn,n->ek", special.j0(2 * math.pi * f[None, :, None] * r[:, None, :]), w)
    out = np.empty((loss.size, f.size))
    for k in range(f.size):
        out[:, k] = np.interp(loss, Eg, G[:, k])
    return out


# ------------------------------------------------------------------------------------------ line shapes


def _gauss(E: np.ndarray, centre: float, fwhm: float) -> np.ndarray:
    s = fwhm * FWHM_TO_SIGMA
    return np.exp(-0.5 * ((E - centre) / s) ** 2) / (s * math.sqrt(2 * math.pi))


def _arctan_step(E: np.ndarray, centre: float, width: float) -> np.ndarray:
    return 0.5 + np.arctan((E - centre) / width) / math.pi


def _taper(E: np.ndarray, start: float, stop: float) -> np.ndarray:
    """1 below ``start``, 0 above ``stop``, raised cosine between."""
    x = np.clip((E - start) / (stop - start), 0.0, 1.0)
    return 0.5 * (1.0 + np.cos(math.pi * x))


def drude_ssd(E: np.ndarray, Ep: float, dEp: float, E0_eV: float, beta_rad: float) -> np.ndarray:
    """Drude single-scattering shape ELF(E) ln(1 + beta^2/theta_E^2) (§1.3, Egerton eqs. 3.40/3.42/4.26),
    arbitrary scale (it is normalised to t/lambda, §1.3 note)."""
    E = np.asarray(E, dtype=float)
    out = np.zeros_like(E)
    m = E > 0
    e = E[m]
    elf = Ep**2 * e * dEp / ((e**2 - Ep**2) ** 2 + (e * dEp) ** 2)
    out[m] = elf * np.log1p(beta_rad**2 / theta_E_rad(e, E0_eV) ** 2)
    return out


def lorentz_ssd(E: np.ndarray, E_osc: float, width: float, E0_eV: float, beta_rad: float) -> np.ndarray:
    """Single-scattering shape of one interband (Lorentz) oscillator of the loss function,
    ELF = E G E_osc^2 / ((E^2 - E_osc^2)^2 + (E G)^2) (physics-seed-systems.md B.1), times the angular
    factor ln(1 + beta^2/theta_E^2) as the Drude term; arbitrary scale."""
    return drude_ssd(E, E_osc, width, E0_eV, beta_rad)


def valence_ssd(E: np.ndarray, m: Material, E0_eV: float, beta_rad: float,
                E_ref: np.ndarray | None = None) -> np.ndarray:
    """Valence single scattering of a phase without its shallow edges, arbitrary scale: the Drude
    plasmon plus each of ``m.valence_oscillators`` (energy, width, height), an oscillator whose
    maximum in the single-scattering distribution is ``height`` x the plasmon's maximum (the
    FePO4 5 eV peak: 0.25, B.1). Maxima are taken on ``E_ref`` (default ``E``)."""
    E = np.asarray(E, dtype=float)
    Er = E if E_ref is None else np.asarray(E_ref, dtype=float)
    out = drude_ssd(E, m.plasmon_eV, m.plasmon_width_eV, E0_eV, beta_rad)
    if not m.valence_oscillators:
        return out
    d_max = float(drude_ssd(Er, m.plasmon_eV, m.plasmon_width_eV, E0_eV, beta_rad).max())
    for e_osc, width, height in m.valence_oscillators:
        o_max = float(lorentz_ssd(Er, e_osc, width, E0_eV, beta_rad).max())
        if o_max > 0:
            out = out + height * d_max / o_max * lorentz_ssd(E, e_osc, width, E0_eV, beta_rad)
    return out


def zlp_channel_contents(k: np.ndarray, d: float, p: EELSParameters) -> np.ndarray:
    """ZLP (unit area) integrated over channels centred at loss k*d (width d), §1.2.

    cfeg: Fowler-Nordheim total-energy distribution exp(-E/dt)/(1 + exp(-E/kT)) in loss E (tail on the
    positive-loss side) convolved with a Gaussian whose width is solved so that the total FWHM is the
    effective value (HT ripple + detector). schottky: exponentially modified Gaussian. Peak maximum at 0.
    """
    h = min(0.005, d / 10)
    x = np.arange(-4.0, 8.0 + h, h)

    def shape(sig: float) -> np.ndarray:
        if p.gun == "cfeg":
            z = -x / p.emitter_kT_eV
            base = np.exp(-x / p.zlp_tail_eV - np.logaddexp(0.0, z))
        else:
            base = np.where(x >= 0, np.exp(-x / p.zlp_tail_eV), 0.0)
        g = np.exp(-0.5 * (np.arange(-int(5 * sig / h) - 1, int(5 * sig / h) + 2) * h / sig) ** 2)
        out = np.convolve(base, g, mode="same")
        return out / out.max()

    def fwhm(sig: float) -> float:
        y = shape(sig)
        above = np.nonzero(y >= 0.5)[0]
        return (above[-1] - above[0]) * h

    target = p.zlp_fwhm
    sig = brentq(lambda s: fwhm(s) - target, 0.01, target) if fwhm(0.01) < target else 0.01
    y = shape(sig)
    i = int(np.argmax(y))
    # parabolic refinement of the maximum so the ZLP peak sits at 0 loss
    a, b, c = y[i - 1], y[i], y[i + 1]
    x0 = x[i] + 0.5 * h * (a - c) / (a - 2 * b + c)
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (y[1:] + y[:-1]) * h)])
    xm = 0.5 * (x[1:] + x[:-1])
    xc = np.concatenate([[x[0] - 0.5 * h], xm, [x[-1] + 0.5 * h]])
    cumc = np.concatenate([[0.0], cum[:-1] + 0.5 * (cum[1:] - cum[:-1]), [cum[-1]]])
    E = k * d + x0
    F = np.interp(E + d / 2, xc, cumc) - np.interp(E - d / 2, xc, cumc)
    return F / F.sum()


def _real_times_complex(W: np.ndarray, H: np.ndarray) -> np.ndarray:
    """W @ H for a real W (rows x k) and a complex H (k x F), k small (components and phases).

    The product is real-linear, so it is W times H's interleaved (real, imaginary) float64 view:
    one dgemm on one BLAS thread, 10-20x faster than numpy's mixed real-complex product or a sum
    of k scaled rows; it differs from them by rounding only (~3e-16 relative)."""
    H = np.ascontiguousarray(H, dtype=np.complex128)
    W = np.ascontiguousarray(W, dtype=np.float64)
    with one_blas_thread():
        return (W @ H.view(np.float64)).view(np.complex128)


# ------------------------------------------------------------------------------------------ the cache


@dataclass
class _Component:
    name: str            # e.g. "valence", "Li K", "Ti4", "Ti3", "O main", "O pre", "O b 560.0"
    element: str | None  # element whose areal density scales it (None: valence)
    shape: np.ndarray    # single-scattering contents per channel on the periodic grid, per atom (m^2) or unit


@dataclass(frozen=True)
class _EdgeIntegral:
    name: str            # as _Component.name
    element: str
    integral: float      # sum of the component's contents over the normalisation grid (m^2 per atom)


@dataclass
class _Cache:
    d: float
    k_lo: int
    n_ext: int
    P: int
    support_k: int
    zhat: np.ndarray
    components: list[_Component]
    comp_hat: np.ndarray          # (n_comp, P//2+1) FFT of the shapes
    comp_integral: np.ndarray     # (n_comp,) sum of shape contents
    valence_hat: list[np.ndarray]  # per layer: FFT of p_v (unit sum)
    kappa: np.ndarray             # per layer valence scale
    layer_comps: list[list[int]]  # per layer: indices of components present
    parent_w: np.ndarray          # (n_layers, n_comp) component weights of the layer's parent composition
    templates: np.ndarray         # (n_templates, n_ext) fourier-ratio templates (per unit I0)
    template_index: list[tuple[int, int]]  # (layer, component or -1 = valence)
    bank_eV: np.ndarray
    #: per layer/phase: core-edge scattering per metre of its path at its own composition (1/m), so
    #: that a phase's valence share of t/lambda is L_p/lambda_p - L_p x this
    edge_per_m: np.ndarray

    @functools.cached_property
    def single_hat(self) -> np.ndarray:
        """(n_comp + n_layers, P//2+1): the edge FFTs then the layers' valence FFTs, the basis a row's
        single scattering is a real combination of (`_fourier_log`), stacked once per cache."""
        return np.ascontiguousarray(np.vstack([self.comp_hat, np.array(self.valence_hat)]), dtype=np.complex128)


class EELSSynthesizer:
    """Expected-electron spectrum images for a sample (see module docstring). Keeps the caches."""

    def __init__(self, params: EELSParameters | None = None) -> None:
        self.params = params or EELSParameters()
        self._caches: dict[tuple, _Cache] = {}
        self._hold: dict[int, tuple[Material, ...]] = {}
        # core-edge integrals over the normalisation grid, per (grid points, elements): the same for
        # every window of a sample (they depend only on the elements and the parameters)
        self._edge_integrals: dict[tuple[int, tuple[str, ...]], list[_EdgeIntegral]] = {}
        # chromatic transfer functions (frequency x channel) per (window, row grid)
        self._blur_transfer: dict[tuple, np.ndarray] = {}
        # continuum factor of each K edge's sum-rule normalisation (`_k_edge_continuum_factor`)
        self._x_cache: dict[str, float] = {}

    # ------------------------------------------------------------------------------------------ public
    def synthesize(
        self,
        energy_eV: np.ndarray,
        column: ColumnState,
        electrons: np.ndarray | float,
        energy_shift_eV: np.ndarray | float = 0.0,
        method: Literal["auto", "fourier_log", "fourier_ratio"] = "auto",
        blur_rows: bool = True,
    ) -> np.ndarray:
        """Expected electrons per channel, array (n_rows, n_channels) float64.

        ``energy_eV``: channel centres (uniform, e.g. ``CameraSettings.energy_axis_eV``); ``electrons``:
        incident electrons per row (scalar or n_rows; see :func:`electrons_per_row`);
        ``energy_shift_eV``: the exposure's energy shift, a scalar or samples equally spaced in time over
        the exposure (their mean shifts, their spread blurs). A positive shift moves features to higher
        channel energies. ``method``: see module docstring ("auto": fourier_log if the window contains
        the ZLP). ``blur_rows``: False leaves out the chromatic blur along the rows (§1.7), for rows
        that are not an evenly spaced line (sub-pixel positions); `blur_along_rows` applies it later.
        """
        E = np.asarray(energy_eV, dtype=float)
        if E.ndim != 1 or E.size < 2:
            raise ValueError("energy axis must be 1-D with at least 2 channels")
        d = float(E[1] - E[0])
        if d <= 0 or not np.allclose(np.diff(E), d, rtol=1e-6, atol=1e-9):
            raise ValueError("energy axis must be uniform and increasing")
        shifts = np.atleast_1d(np.asarray(energy_shift_eV, dtype=float))
        n_rows = column.n_rows
        N = np.broadcast_to(np.asarray(electrons, dtype=float), (n_rows,))
        dE_y = self.nonisochromaticity_eV(column.y_m)
        mean_shift = float(shifts.mean())
        max_shift = float(np.max(np.abs(shifts)) + np.max(np.abs(dE_y), initial=0.0))
        margin = 8 + int(math.ceil(max_shift / d)) + 2
        margin = 1 << int(math.ceil(math.log2(margin)))
        cache = self._cache(E[0], d, E.size, margin, column)

        I0 = N * np.exp(-column.t_over_lambda_all)
        contains_zlp = E[0] < 0.5 < E[-1]
        if method == "auto":
            method = "fourier_log" if contains_zlp else "fourier_ratio"
        if column.phase_t_over_lambda is not None:
            # columns of several phases (structured samples): exact per row; the Fourier-ratio
            # templates would give every row its longest phase's low-loss
            method = "fourier_log"
        atoms = self._component_weights(cache, column)  # (n_rows, n_comp): areal density x modifiers
        if method == "fourier_ratio":
            ext = self._fourier_ratio(cache, column, atoms, I0)
        else:
            ext = self._fourier_log(cache, column, atoms, I0)
        if blur_rows:
            ext = self._chromatic_blur(ext, d * (cache.k_lo + np.arange(cache.n_ext)), column)
        # drift spread (histogram of residual shifts, linear split onto whole channels)
        resid = (shifts - mean_shift) / d
        if shifts.size > 1 and np.ptp(resid) > 1e-9:
            lo = int(math.floor(resid.min()))
            hi = int(math.floor(resid.max())) + 1
            kern = np.zeros(hi - lo + 1)
            fl = np.floor(resid).astype(int)
            fr = resid - fl
            np.add.at(kern, fl - lo, 1 - fr)
            np.add.at(kern, fl - lo + 1, fr)
            kern /= kern.sum()
            # convolve1d origin: kernel index j shifts content by (lo + j) channels
            full = np.zeros(2 * max(abs(lo), abs(hi)) + 1)
            c0 = len(full) // 2
            full[c0 + lo : c0 + hi + 1] = kern
            ext = convolve1d(ext, full[::-1], axis=1, mode="constant")
        # per-row mean shift + window alignment by linear interpolation (conserves counts). The shift is
        # constant along a row, so each row is a contiguous slice at an integer offset plus a fraction;
        # rows sharing an offset are handled together (few distinct offsets: dE(y) and drift are small).
        delta = mean_shift + dE_y
        pos0 = (E[0] - delta) / d - cache.k_lo
        j0 = np.clip(np.floor(pos0).astype(np.intp), 0, cache.n_ext - E.size - 1)
        f = (pos0 - j0)[:, None]
        out = np.empty((n_rows, E.size))
        for o in np.unique(j0):
            rows = np.nonzero(j0 == o)[0]
            blk = ext[rows, o : o + E.size + 1]
            out[rows] = blk[:, :-1] * (1.0 - f[rows]) + blk[:, 1:] * f[rows]
        return out

    def model_t_over_lambda(self, energy_eV: np.ndarray, column: ColumnState) -> np.ndarray:
        """Single-scattering integral per row of the model over the losses this axis's grid holds (from 0
        to the window's end): ln(I_total/I0) of a window that starts below the ZLP. It approaches
        ``column.t_over_lambda`` (rows at the parent composition) as the window reaches NORM_RANGE_EV;
        Li insertion adds its Li-K."""
        E = np.asarray(energy_eV, dtype=float)
        cache = self._cache(E[0], float(E[1] - E[0]), E.size, 16, column)
        atoms = self._component_weights(cache, column)
        in_grid = np.array([float(v[0].real) for v in cache.valence_hat])  # valence area on the grid
        if column.phase_t_over_lambda is not None:
            return self._phase_kappa(cache, column) @ in_grid + atoms @ cache.comp_integral
        return cache.kappa[column.layer_index] * in_grid[column.layer_index] + atoms @ cache.comp_integral

    def nonisochromaticity_eV(self, y_m: np.ndarray) -> np.ndarray:
        """dE(y) = (pp/2) [f u + (1 - f)(2u^2 - 1)], u in [-1, 1] across the rows (§1.9); p-p <= pp."""
        y = np.asarray(y_m, dtype=float)
        p = self.params
        if y.size < 2 or p.nonisochromaticity_pp_eV == 0 or np.ptp(y) == 0:
            return np.zeros(y.shape)
        u = 2 * (y - y.min()) / np.ptp(y) - 1
        f = p.nonisochromaticity_linear_fraction
        return 0.5 * p.nonisochromaticity_pp_eV * (f * u + (1 - f) * (2 * u * u - 1))

    # ------------------------------------------------------------------------------------------ internals
    def _component_weights(self, cache: _Cache, col: ColumnState) -> np.ndarray:
        """(n_rows, n_comp) multipliers of each single-scattering component: areal density x ELNES driver."""
        n = col.n_rows
        W = np.zeros((n, len(cache.components)))
        bank = cache.bank_eV
        Eb = self.params.o_threshold_eV + self.params.o_peak_b_constant_eV_nm2 / col.R_nm**2
        pos = np.clip((Eb - bank[0]) / (bank[1] - bank[0]), 0, len(bank) - 1 - 1e-9)
        ib = np.floor(pos).astype(int)
        fb = pos - ib
        f_pre = np.array([m.o_k_prepeak for m in col.layer_materials])[col.layer_index] if col.layer_materials else np.ones(n)
        g3 = self._fe3_o_fraction(col)
        # elements with state-dependent L edges: rows that declare no state keep the hydrogenic edge
        ox = {el: col.oxidation_state.get(el, np.full(n, np.nan)) for el in STATE_EDGES}
        tm = {el: white_line_state_weights(st, ox[el]) for el, st in STATE_EDGES.items()}
        for j, c in enumerate(cache.components):
            if c.element is None:
                continue
            nd = col.areal_density_per_m2.get(c.element)
            if nd is None:
                continue
            state = state_component(c.name, c.element)
            if state is not None:
                W[:, j] = np.where(np.isnan(ox[c.element]), 0.0, nd * tm[c.element][state])
            elif c.element in ox and c.name == f"{c.element} L":
                W[:, j] = np.where(np.isnan(ox[c.element]), nd, 0.0)
            elif c.name == "Ti4":
                W[:, j] = nd * (1 - col.f_ti3)
            elif c.name == "Ti3":
                W[:, j] = nd * col.f_ti3
            elif c.name == "O pre":
                W[:, j] = nd * col.prepeak_amplitude * f_pre * (1.0 - g3)
            elif c.name == "O main":
                W[:, j] = nd * f_pre * (1.0 - g3)
            elif c.name == "O main 0":
                W[:, j] = nd * (1.0 - f_pre) * (1.0 - g3)
            elif c.name in ("O pre Fe3", "O main Fe3"):
                W[:, j] = nd * g3
            elif c.name.startswith("O b "):
                kb = int(c.name.split()[-1])
                W[:, j] = nd * (np.where(ib == kb, 1 - fb, 0.0) + np.where(ib + 1 == kb, fb, 0.0))
            else:
                W[:, j] = nd
        return W

    @staticmethod
    def _fe3_o_fraction(col: ColumnState) -> np.ndarray:
        """Per row: the fraction of its O atoms that belong to phases with the Fe3+ O-K pre-edge
        (`Material.o_k_fe3_prepeak`), from each phase's path and O content."""
        mats = col.layer_materials
        if not mats or not any(m.o_k_fe3_prepeak for m in mats):
            return np.zeros(col.n_rows)
        L = col.phase_paths()
        o_per_m3 = np.array([m.formula.get("O", 0.0) * m.density_g_cm3 * 1e6 / m.molar_mass_g_mol * AVOGADRO
                             if m.formula else 0.0 for m in mats])
        o_atoms = L[:, : len(mats)] * o_per_m3[None, :]
        total = o_atoms.sum(axis=1)
        fe3 = o_atoms @ np.array([m.o_k_fe3_prepeak for m in mats])
        return np.where(total > 0, fe3 / np.where(total > 0, total, 1.0), 0.0)

    def blur_along_rows(self, spectra: np.ndarray, energy_eV: np.ndarray, column: ColumnState) -> np.ndarray:
        """The chromatic blur along the rows (§1.7) of spectra synthesised with ``blur_rows=False``
        on the evenly spaced rows of ``column``, each channel by the profile of its loss."""
        return self._chromatic_blur(spectra, np.asarray(energy_eV, dtype=float), column)

    def _chromatic_blur(self, ext: np.ndarray, loss_eV: np.ndarray, col: ColumnState) -> np.ndarray:
        """Blur every channel along the rows with the chromatic profile of its loss E (§1.7).

        Per channel the transfer function along the rows is :func:`chromatic_transfer` (the cusp
        profile of a Lorentzian angular distribution cut at beta); the first and last rows are
        repeated beyond the field over the extreme ray R = Cc beta |E - E_f| / E0* (as
        ``mode="nearest"``), so the periodic transform does not wrap one end onto the other."""
        p = self.params
        n = col.n_rows
        if n < 2 or p.Cc_m == 0:
            return ext
        dy = abs(float(col.y_m[-1] - col.y_m[0])) / (n - 1)  # rows are uniformly spaced
        if dy == 0:
            return ext
        R_rows = chromatic_extreme_ray_m(loss_eV, p) / dy
        r_max = float(R_rows.max())
        if r_max < 0.05:
            return ext
        pad = int(math.ceil(r_max)) + 2
        L = sfft.next_fast_len(n + 2 * pad, real=True)
        key = (round(float(loss_eV[0]), 9), round(float(loss_eV[1] - loss_eV[0]), 12), loss_eV.size, L,
               round(dy, 15))
        G = self._blur_transfer.get(key)
        if G is None:
            G = chromatic_transfer(sfft.rfftfreq(L) / dy, loss_eV, p).T  # (freq, channels)
            if len(self._blur_transfer) > 8:
                self._blur_transfer.pop(next(iter(self._blur_transfer)))
            self._blur_transfer[key] = G
        F = sfft.rfft(np.pad(ext, ((pad, L - n - pad), (0, 0)), mode="edge"), axis=0)
        F *= G
        return sfft.irfft(F, n=L, axis=0, overwrite_x=True)[pad : pad + n]

    def _fourier_ratio(self, cache: _Cache, col: ColumnState, atoms: np.ndarray, I0: np.ndarray) -> np.ndarray:
        n = col.n_rows
        Wt = np.zeros((n, len(cache.template_index)))
        for t, (layer, comp) in enumerate(cache.template_index):
            in_layer = col.layer_index == layer
            if comp < 0:
                Wt[:, t] = np.where(in_layer, I0, 0.0)
            else:
                Wt[:, t] = np.where(in_layer, I0 * (atoms[:, comp] - cache.parent_w[layer, comp]), 0.0)
        used = np.nonzero(np.any(Wt != 0.0, axis=0))[0]  # e.g. only the peak-b bank entries in use
        return Wt[:, used] @ cache.templates[used]

    def _fourier_log(self, cache: _Cache, col: ColumnState, atoms: np.ndarray, I0: np.ndarray) -> np.ndarray:
        """Exact J = I0 Z ⊗ exp*(s) per row; s = edges + valence, where the valence of a row is its
        layer's kappa x the layer's shape, or for columns of several phases the sum over its phases
        (`_phase_kappa`). Rows with the same single scattering (a uniform layer, vacuum) are
        evaluated once."""
        if col.phase_t_over_lambda is not None:
            # every phase of a row contributes its own valence shape, weighted by its path
            V = self._phase_kappa(cache, col)
        else:
            V = np.zeros((col.n_rows, len(cache.valence_hat)))
            V[np.arange(col.n_rows), col.layer_index] = cache.kappa[col.layer_index]
        W, inverse = np.unique(np.hstack([atoms, V]), axis=0, return_inverse=True)
        s_hat = _real_times_complex(W, cache.single_hat)
        # in place: one complex (rows x P/2) array alive instead of three
        np.exp(s_hat, out=s_hat)
        s_hat *= cache.zhat[None, :]
        J = sfft.irfft(s_hat, n=cache.P, axis=1, overwrite_x=True)
        del s_hat
        idx = (cache.k_lo + np.arange(cache.n_ext)) % cache.P
        out = J[np.ix_(inverse.ravel(), idx)]
        out *= I0[:, None]
        return out

    # ------------------------------------------------------------------------------------------ cache build
    def _cache(self, E_first: float, d: float, n: int, margin: int, col: ColumnState) -> _Cache:
        mats = col.layer_materials
        key = (round(E_first / d, 6), round(d, 12), n, margin, id(mats))
        c = self._caches.get(key)
        if c is None:
            self._hold[id(mats)] = mats
            c = self._build(E_first, d, n, margin, mats, col)
            if len(self._caches) > 8:
                self._caches.pop(next(iter(self._caches)))
            self._caches[key] = c
        return c

    def _build(self, E_first: float, d: float, n: int, margin: int, mats: tuple[Material, ...], col: ColumnState) -> _Cache:
        p = self.params
        k_lo = int(math.floor(E_first / d)) - margin
        n_ext = n + 2 * margin + 1
        k_hi = k_lo + n_ext - 1
        support_k = max(k_hi, int(math.ceil(10.0 / d)))
        k_neg = int(math.ceil(4.0 / d))
        P = sfft.next_fast_len(2 * (support_k + k_neg) + 16, real=True)
        k = np.arange(P)
        k_signed = np.where(k <= P - k_neg - 1, k, k - P)
        E = k_signed * d  # loss energy at each periodic index
        pos = (E > 0) & (k_signed <= support_k)
        zl = np.where(np.abs(k_signed) <= k_neg + int(8.0 / d), 1.0, 0.0)
        Z = np.zeros(P)
        sel = zl > 0
        Z[sel] = zlp_channel_contents(k_signed[sel], d, p)
        zhat = sfft.rfft(Z)

        # every element the column can hold: the formulas', plus any with an areal density (inserted Li)
        elements = sorted({el for m in mats for el in m.formula} | set(col.areal_density_per_m2))
        comps = self._core_components(E, pos, d, elements)
        comp_hat = np.array([sfft.rfft(c.shape) for c in comps]) if comps else np.zeros((0, P // 2 + 1), complex)
        comp_integral = np.array([c.shape.sum() for c in comps])
        # The split of t/lambda into valence and core edges, and the unit area of the valence shape,
        # are taken over a fixed loss range (NORM_RANGE_EV, or the window's support if larger), not
        # over this window's grid: otherwise the valence level would depend on how far the window
        # reaches (a 92 eV window put the whole Drude tail inside it), and two windows of one
        # sample (low-loss and Li-K) would disagree on the plasmon level.
        e_norm = max(NORM_RANGE_EV, support_k * d)
        E_long = NORM_STEP_EV * np.arange(1, int(math.ceil(e_norm / NORM_STEP_EV)) + 1)
        long_edges = self._normalisation_edges(E_long, elements)

        # valence per layer, kappa from the parent composition (first row of the layer, else formula)
        valence_hat, kappa, layer_comps, parent_w = [], [], [], []
        for li, m in enumerate(mats):
            pv = self._valence_channels(np.where(pos, E, 0.0), m, d, E_long)
            pv = np.where(pos, pv, 0.0)
            valence_hat.append(sfft.rfft(pv))
            # the layer's own elements, and Li in every layer: Li inserted into a Li-free host (Si)
            # needs its Li-K template even though the parent formula has none
            present = [j for j, c in enumerate(comps) if c.element in m.formula or c.element == INSERTED_ELEMENT]
            layer_comps.append(present)
            rows = np.nonzero(col.layer_index == li)[0]
            if rows.size:
                r = rows[np.argmin(np.abs(col.li_ratio[rows] - 1.0))]
                pw = np.zeros(len(comps))
                for j in present:
                    pw[j] = self._parent_weight(col, r, comps[j])
                edges_full = sum(self._parent_weight(col, r, c) * c.integral
                                 for c in long_edges if c.element in m.formula)
                kappa.append(float(col.t_over_lambda[r] - edges_full))
            else:
                pw = np.zeros(len(comps))
                kappa.append(0.5)
            parent_w.append(pw)
        kappa_arr = np.array(kappa)

        # Fourier-ratio templates: valence spectrum B = Z ⊗ exp*(kappa p_v) per layer, edges ⊗ B
        idx = (k_lo + np.arange(n_ext)) % P
        rows_t, index = [], []
        # phase columns are always evaluated exactly per row (`_fourier_log`): no templates
        for li in range(len(mats) if col.phase_t_over_lambda is None else 0):
            # the layer's parent composition is inside the exponent (exact Fourier-log there); rows
            # differ from it to first order (Fourier-ratio on the difference of edge weights)
            bhat = zhat * np.exp(kappa_arr[li] * valence_hat[li] + parent_w[li] @ comp_hat)
            rows_t.append(sfft.irfft(bhat, n=P)[idx])
            index.append((li, -1))
            present = layer_comps[li]
            if present:
                T = sfft.irfft(comp_hat[present] * bhat[None, :], n=P, axis=1)[:, idx]
                rows_t.extend(list(T))
                index.extend((li, j) for j in present)
        bank = np.arange(p.o_peak_b_bank_eV[0], p.o_peak_b_bank_eV[1] + 1e-9, p.o_peak_b_bank_eV[2])
        edge_per_m = np.array([self._edge_scattering_per_m(m, long_edges) for m in mats])
        return _Cache(d, k_lo, n_ext, P, support_k, zhat, comps, comp_hat, comp_integral, valence_hat,
                      kappa_arr, layer_comps, np.array(parent_w), np.array(rows_t), index, bank, edge_per_m)

    def _valence_channels(self, E: np.ndarray, m: Material, d: float, E_long: np.ndarray) -> np.ndarray:
        """Valence single scattering (Drude + interband oscillators + shallow edges) per channel of
        width d at losses E, with unit area over the loss range of E_long (see `_build`); 0 where E <= 0."""
        p = self.params
        h = float(E_long[1] - E_long[0])
        drude = valence_ssd(E, m, p.E0_eV, p.beta_rad, E_long)
        norm = float(valence_ssd(E_long, m, p.E0_eV, p.beta_rad).sum()) * h
        w_sh = sum(w for _, _, w in m.shallow_edges)
        out = (1.0 - w_sh) * drude * d / norm
        rise = p.shallow_edge_rise_eV

        def saw(x: np.ndarray, onset: float) -> np.ndarray:
            return np.where(x > onset, -np.expm1(-(x - onset) / rise) * (onset / np.maximum(x, onset)) ** 3, 0.0)

        def delayed(x: np.ndarray, onset: float, maximum: float) -> np.ndarray:
            # rises as (E - onset)^2, peaks at `maximum`, falls as (E - onset)^-3
            u = np.maximum(x - onset, 0.0) / (maximum - onset)
            return 2.5 * u * u / (1.5 + u**5)

        for label, onset, w in m.shallow_edges:
            if label in DELAYED_SHALLOW_EDGES_eV:
                def shape(x: np.ndarray, onset: float = onset, e_max: float = DELAYED_SHALLOW_EDGES_eV[label]) -> np.ndarray:
                    return delayed(x, onset, e_max)
            else:
                def shape(x: np.ndarray, onset: float = onset) -> np.ndarray:
                    return saw(x, onset)
            n_sh = float(shape(E_long).sum()) * h
            if n_sh > 0:
                out = out + w * shape(E) * d / n_sh
        return out

    def _normalisation_edges(self, E_long: np.ndarray, elements: list[str]) -> list[_EdgeIntegral]:
        """Integrals of the core-edge components over the normalisation grid ``E_long`` (step
        NORM_STEP_EV from NORM_STEP_EV), computed once per (grid length, elements)."""
        key = (E_long.size, tuple(elements))
        edges = self._edge_integrals.get(key)
        if edges is None:
            comps = self._core_components(E_long, np.ones(E_long.size, bool), NORM_STEP_EV, elements)
            edges = [_EdgeIntegral(c.name, c.element, float(c.shape.sum())) for c in comps if c.element]
            self._edge_integrals[key] = edges
        return edges

    def _parent_weight(self, col: ColumnState, r: int, c: _Component | _EdgeIntegral) -> float:
        nd = col.areal_density_per_m2.get(c.element, np.zeros(1))[r]
        m = col.layer_materials[col.layer_index[r]] if col.layer_materials else None
        f_pre = m.o_k_prepeak if m is not None else 1.0
        ox = col.oxidation_state.get(c.element) if c.element else None
        return nd * self._parent_weight_per_atom(c, f_pre, float(ox[r]) if ox is not None else None,
                                                 m.o_k_fe3_prepeak if m is not None else 0.0)

    def _parent_weight_per_atom(self, c: _Component | _EdgeIntegral, f_pre: float, ox: float | None = None,
                                f_fe3: float = 0.0) -> float:
        """Weight of a component per atom of its element at a parent composition (Ti4+, R = 0.280 nm,
        the full pre-peak scaled by the material's ``o_k_prepeak`` = f_pre, 3d white lines of the
        mean oxidation state ``ox``, the Fe3+ O-K pre-edge on the fraction ``f_fe3`` of its O)."""
        state = state_component(c.name, c.element)
        declared = ox is not None and not math.isnan(ox)
        if state is not None:
            return float(white_line_state_weights(STATE_EDGES[c.element], np.array([ox]))[state][0]) if declared else 0.0
        if c.element in STATE_EDGES and c.name == f"{c.element} L":
            return 0.0 if declared else 1.0
        if c.name in ("O pre", "O main"):
            return f_pre * (1.0 - f_fe3)
        if c.name == "O main 0":
            return (1.0 - f_pre) * (1.0 - f_fe3)
        if c.name in ("O pre Fe3", "O main Fe3"):
            return f_fe3
        if c.name == "Ti3":
            return 0.0
        if c.name.startswith("O b "):
            return self._bank_weight_parent(c)
        return 1.0

    def _edge_scattering_per_m(self, m: Material, long_edges: list[_EdgeIntegral]) -> float:
        """Core-edge single scattering per metre of path through phase ``m`` (1/m): atoms per m^3 of
        each element x its edge integral over the normalisation range."""
        if not m.formula:
            return 0.0
        fu_per_m3 = m.density_g_cm3 * 1e6 / m.molar_mass_g_mol * AVOGADRO
        return float(sum(m.formula[c.element] * fu_per_m3 * c.integral
                         * self._parent_weight_per_atom(c, m.o_k_prepeak, m.valence_states.get(c.element), m.o_k_fe3_prepeak)
                         for c in long_edges if c.element in m.formula))

    def _phase_kappa(self, cache: _Cache, col: ColumnState) -> np.ndarray:
        """Valence single-scattering strength of every phase in every row (rows x phases): the
        phase's L_p/lambda_p less the core-edge scattering of its atoms, so that a row's valence and
        edges together equal its t/lambda and each phase's valence shape is weighted by its path."""
        tl = col.phase_t_over_lambda
        L = col.phase_paths()
        return np.clip(tl - L * cache.edge_per_m[None, : tl.shape[1]], 0.0, None)

    def _bank_weight_parent(self, c: _Component | _EdgeIntegral) -> float:
        return float(self._parent_bank_weights()[int(c.name.split()[-1])])

    def _core_components(self, E: np.ndarray, pos: np.ndarray, d: float, elements: list[str]) -> list[_Component]:
        """Single-scattering core-edge shapes per atom (channel contents, m^2) on the periodic grid.

        Near-edge structure obeys the Bethe sum rule (physics.md §1.8, seed §D.2): for the K edges
        (Li-K, O-K) the ELNES peaks take their strength from the continuum under them, so that the
        integral from onset - 5 eV to onset + ``k_sum_rule_window_eV`` equals the hydrogenic one
        (`_k_edge_continuum_factor`); beyond it the model is the hydrogenic edge. 3d L2,3 white
        lines (Ti) are strength the hydrogenic L model lacks: their area is
        ``ti_white_line_per_hole`` x (empty 3d states) x the hydrogenic continuum 50-100 eV above L3
        (Pearson et al. 1993), on top of the continuum."""
        p = self.params
        Emax = float(E[pos].max())
        out: list[_Component] = []
        Ep = np.where(pos, E, 0.0)

        for el in elements:
            if el not in CORE_EDGES or CORE_EDGES[el][1] >= Emax:
                continue
            shell, onset, _ = CORE_EDGES[el]
            if el == "Li":
                cont, elnes, borrow = self._li_k_parts(Ep)
                x = self._k_edge_continuum_factor("Li")
                shape = cont - x * borrow + elnes
                out.append(_Component("Li K", el, np.where(pos, shape, 0.0) * d))
            elif el == "O":
                cont, (pre, peak_a, bank), borrow = self._o_k_parts(Ep)
                # continuum normalised with the pre-peaks (d0 Ti oxide) and without (no open 3d
                # states); a material's rows mix the two by its o_k_prepeak (exact: x is linear in it)
                x1, x0 = self._k_edge_continuum_factor("O"), self._k_edge_continuum_factor("O0")
                out.append(_Component("O main", el, np.where(pos, cont - x1 * borrow + peak_a, 0.0) * d))
                out.append(_Component("O main 0", el, np.where(pos, cont - x0 * borrow + peak_a, 0.0) * d))
                out.append(_Component("O pre", el, np.where(pos, pre, 0.0) * d))
                # O atoms bonded to Fe3+ (FePO4): one pre-edge of their own, the continuum under it
                # lending its strength (sum rule), no d0 Ti doublet
                x3 = self._k_edge_continuum_factor("O3")
                out.append(_Component("O main Fe3", el, np.where(pos, cont - x3 * borrow + peak_a, 0.0) * d))
                out.append(_Component("O pre Fe3", el, np.where(pos, self._o_fe3_prepeak(Ep), 0.0) * d))
                for kb, g in enumerate(bank):
                    out.append(_Component(f"O b {kb}", el, np.where(pos, g, 0.0) * d))
            elif el == "Ti":
                for name, shape in self._ti_l_shapes(Ep):
                    out.append(_Component(name, el, np.where(pos, shape, 0.0) * d))
            elif el in STATE_EDGES:
                # the hydrogenic edge for rows that declare no oxidation state, and one shape per state
                out.append(_Component(f"{el} {shell}", el, self._hydro(el, Ep) * pos * d))
                for state in STATE_EDGES[el]:
                    shape = (self._si_l_shape(SI_L_ONSETS_eV[state], Ep) if el == "Si"
                             else self._tm_l_shape(el, TM_WHITE_LINES[el][int(state)], Ep))
                    out.append(_Component(f"{el} L {state:g}", el, np.where(pos, shape, 0.0) * d))
            else:
                out.append(_Component(f"{el} {shell}", el, self._hydro(el, Ep) * pos * d))
        return out

    # ------------------------------------------------------------------------------------------ edge shapes
    def _hydro(self, el: str, E: np.ndarray, onset: float | None = None) -> np.ndarray:
        """Hydrogenic dsigma/dE (m^2/eV per atom) of element ``el`` at losses E (0 below the onset)."""
        p = self.params
        shell, on, l1 = CORE_EDGES[el]
        on = on if onset is None else onset
        m = E > on
        ds = np.zeros_like(E, dtype=float)
        if np.any(m):
            ds[m] = dsigma_dE(E[m], shell, ATOMIC_NUMBER[el], on, p.E0_eV, p.beta_rad, p.alpha_rad, l1)
        return ds

    def _sigma(self, el: str, onset: float, window: float) -> float:
        p = self.params
        shell, _, l1 = CORE_EDGES[el]
        return sigma_integrated(shell, ATOMIC_NUMBER[el], onset, window, p.E0_eV, p.beta_rad, 0.0, l1)

    def _borrow(self, E: np.ndarray, cont: np.ndarray, onset: float) -> np.ndarray:
        """The part of a K-edge continuum that lends strength to the near-edge peaks: all of it over
        the first 10 eV, tapering (raised cosine) to none at the end of the sum-rule window, so the
        reduced continuum rejoins the hydrogenic one without a kink next to the peaks."""
        end = onset + self.params.k_sum_rule_window_eV
        return cont * _taper(E, onset + 10.0, end)

    def _li_k_parts(self, E: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Li-K (§1.8): (continuum, ELNES peaks, borrowable continuum) per atom, m^2/eV. Continuum:
        an arctan step at li_step_eV at the hydrogenic level of li_join_eV[1], joined to the
        hydrogenic K edge over li_join_eV; peaks: li_peaks (areas in sigma(onset, 40 eV))."""
        p = self.params
        onset = CORE_EDGES["Li"][1]
        H = self._hydro("Li", E)
        j0, j1 = p.li_join_eV
        Hj = float(self._hydro("Li", np.array([j1]))[0])
        w = _taper(E, j0, j1)
        step = Hj * _arctan_step(E, p.li_step_eV, p.li_step_width_eV) * (E > onset)
        cont = w * step + (1 - w) * H
        s40 = self._sigma("Li", onset, 40.0)
        elnes = sum(a * s40 * _gauss(E, c0, fw) for c0, fw, a in p.li_peaks)
        return cont, np.asarray(elnes, dtype=float) * (E > 0), self._borrow(E, cont, onset)

    def _o_k_parts(self, E: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, list[np.ndarray]], np.ndarray]:
        """O-K (§1.8): (continuum, (pre-peaks at c0, peak a, peak-b bank), borrowable continuum) per
        atom, m^2/eV. Continuum: hydrogenic K from the threshold with an arctan step at o_step_eV."""
        p = self.params
        onset = p.o_threshold_eV
        cont = self._hydro("O", E, onset) * _arctan_step(E, p.o_step_eV, p.o_step_width_eV)
        s40 = self._sigma("O", onset, 40.0)
        pre = sum(a * s40 * _gauss(E, c0, fw) for c0, fw, a in p.o_prepeaks)
        c0, fw, a = p.o_peak_a
        peak_a = a * s40 * _gauss(E, c0, fw)
        bank = [p.o_peak_b_area * s40 * _gauss(E, eb, p.o_peak_b_fwhm_eV) for eb in self._bank()]
        pos = E > 0
        return cont, (np.asarray(pre, dtype=float) * pos, peak_a * pos, [g * pos for g in bank]), self._borrow(E, cont, onset)

    def _o_fe3_prepeak(self, E: np.ndarray) -> np.ndarray:
        """The O-K pre-edge of O bonded to Fe3+ (FePO4), per O atom, m^2/eV (`o_fe3_prepeak`)."""
        c0, fw, a = self.params.o_fe3_prepeak
        return a * self._sigma("O", self.params.o_threshold_eV, 40.0) * _gauss(E, c0, fw) * (E > 0)

    def _bank(self) -> np.ndarray:
        p = self.params
        return np.arange(p.o_peak_b_bank_eV[0], p.o_peak_b_bank_eV[1] + 1e-9, p.o_peak_b_bank_eV[2])

    def _k_edge_continuum_factor(self, el: str) -> float:
        """x such that continuum - x borrow + ELNES integrates, from onset - 5 eV to onset +
        k_sum_rule_window_eV, to the hydrogenic edge over onset .. onset + window (Bethe sum rule,
        seed §D.2). Evaluated once per element on a fine grid (independent of any window), with the
        parent's ELNES (O-K: full pre-peaks, peak b at R = 0.280 nm)."""
        cached = self._x_cache.get(el)
        if cached is not None:
            return cached
        p = self.params
        onset = CORE_EDGES["Li"][1] if el == "Li" else p.o_threshold_eV
        h = 0.02
        Eg = np.arange(onset - 5.0, onset + p.k_sum_rule_window_eV, h) + h / 2
        target = float(self._hydro(el[0] if el.startswith("O") else el, Eg, onset).sum() * h)
        if el == "Li":
            cont, elnes, borrow = self._li_k_parts(Eg)
        else:  # "O": with the d0 Ti pre-peaks, "O0": without any, "O3": with the Fe3+ pre-edge
            cont, (pre, peak_a, bank), borrow = self._o_k_parts(Eg)
            wb = self._parent_bank_weights()
            pre_el = {"O": pre, "O0": 0.0, "O3": self._o_fe3_prepeak(Eg)}[el]
            elnes = pre_el + peak_a + sum(w * g for w, g in zip(wb, bank))
        x = (float(cont.sum() + elnes.sum()) * h - target) / (float(borrow.sum()) * h)
        if x > 1.0:
            raise ValueError(f"{el}-K near-edge peaks hold more strength than the hydrogenic edge over the "
                             f"sum-rule window: lower their areas in EELSParameters")
        self._x_cache[el] = x
        return x

    def _parent_bank_weights(self) -> np.ndarray:
        p = self.params
        bank = self._bank()
        Eb = p.o_threshold_eV + p.o_peak_b_constant_eV_nm2 / p.o_parent_R_nm**2
        pos = np.clip((Eb - bank[0]) / (bank[1] - bank[0]), 0, len(bank) - 1 - 1e-9)
        ib, fb = int(pos), pos - int(pos)
        w = np.zeros(len(bank))
        w[ib] = 1 - fb
        w[ib + 1] += fb
        return w

    def ti_white_line_area(self, d_holes: float) -> float:
        """White-line area (L3 + L2) per Ti atom, m^2: ti_white_line_per_hole x d holes x the
        hydrogenic L2,3 continuum integrated 50-100 eV above L3 (Pearson et al. 1993 normalisation)."""
        p = self.params
        on = CORE_EDGES["Ti"][1]
        h = 0.05
        Eg = np.arange(on + 50.0, on + 100.0, h) + h / 2
        return p.ti_white_line_per_hole * d_holes * float(self._hydro("Ti", Eg).sum() * h)

    def _ti_l_shapes(self, E: np.ndarray) -> list[tuple[str, np.ndarray]]:
        """Ti-L2,3 per atom (§1.8): Ti4+ (d0) four white lines, Ti3+ (d1) two merged lines shifted by
        ti3_shift_eV from the Ti4+ eg lines, each on arctan steps 2:1 at L3, L2 joined to the
        hydrogenic L continuum; white-line areas from `ti_white_line_area`."""
        p = self.params
        onset = CORE_EDGES["Ti"][1]
        L3_t2g, L3_eg = p.ti4_L3_eV
        so = p.ti_spin_orbit_eV
        out = []
        for name, shift, holes, ratio in (("Ti4", 0.0, p.ti_d_holes[0], p.ti4_L2_L3),
                                          ("Ti3", p.ti3_shift_eV, p.ti_d_holes[1], p.ti3_L2_L3)):
            a_wl = self.ti_white_line_area(holes)
            a3 = a_wl / (1 + ratio)
            a2 = a_wl - a3
            if name == "Ti4":
                f_t2g = p.ti_t2g_eg_area / (1 + p.ti_t2g_eg_area)
                f3, f4, f5, f6 = p.ti4_fwhm_eV
                wl = (a3 * f_t2g * _gauss(E, L3_t2g, f3) + a3 * (1 - f_t2g) * _gauss(E, L3_eg, f4)
                      + a2 * f_t2g * _gauss(E, L3_t2g + so, f5) + a2 * (1 - f_t2g) * _gauss(E, L3_eg + so, f6))
                L3_on = L3_t2g
            else:
                c3 = L3_eg + shift
                wl = a3 * _gauss(E, c3, p.ti3_fwhm_eV[0]) + a2 * _gauss(E, c3 + so, p.ti3_fwhm_eV[1])
                L3_on = L3_t2g + shift
            L2_on = L3_on + so
            j0, j1 = onset + p.ti_join_eV[0], onset + p.ti_join_eV[1]
            Hj = float(self._hydro("Ti", np.array([j1]))[0])
            steps = Hj * ((2 / 3) * _arctan_step(E, L3_on, p.ti_step_width_eV)
                          + (1 / 3) * _arctan_step(E, L2_on, p.ti_step_width_eV)) * (E > L3_on - 3.0)
            w = _taper(E, j0, j1)
            Hs = self._hydro("Ti", E, onset + shift) if shift else self._hydro("Ti", E)
            out.append((name, (w * steps + (1 - w) * Hs + wl) * (E > 0)))
        return out

    def white_line_area(self, el: str, d_holes: float) -> float:
        """White-line area (L3 + L2) per atom of 3d metal ``el``, m^2: the Ti rule
        (`ti_white_line_area`) with its own hydrogenic L continuum 50-100 eV above L3."""
        on = CORE_EDGES[el][1]
        h = 0.05
        Eg = np.arange(on + 50.0, on + 100.0, h) + h / 2
        return self.params.ti_white_line_per_hole * d_holes * float(self._hydro(el, Eg).sum() * h)

    def _tm_l_shape(self, el: str, lines: WhiteLines, E: np.ndarray) -> np.ndarray:
        """L2,3 of a 3d metal per atom: the white lines of ``lines`` on arctan steps 2:1 at the first
        L3 and L2 line, joined to the hydrogenic L continuum over ti_join_eV above the onset."""
        p = self.params
        onset = CORE_EDGES[el][1]
        a_wl = self.white_line_area(el, lines.d_holes)
        a3 = a_wl * lines.L3_over_L2 / (1.0 + lines.L3_over_L2)
        a2 = a_wl - a3
        wl = sum(a3 * share * _gauss(E, c, fw) for c, fw, share in lines.L3)
        wl = wl + sum(a2 * share * _gauss(E, c, fw) for c, fw, share in lines.L2)
        L3_on, L2_on = lines.L3[0][0], lines.L2[0][0]
        j0, j1 = onset + p.ti_join_eV[0], onset + p.ti_join_eV[1]
        Hj = float(self._hydro(el, np.array([j1]))[0])
        steps = Hj * ((2 / 3) * _arctan_step(E, L3_on, p.ti_step_width_eV)
                      + (1 / 3) * _arctan_step(E, L2_on, p.ti_step_width_eV)) * (E > L3_on - 3.0)
        w = _taper(E, j0, j1)
        return (w * steps + (1 - w) * self._hydro(el, E) + wl) * (E > 0)

    def _si_l_shape(self, L3_on: float, E: np.ndarray) -> np.ndarray:
        """Si-L2,3 per atom (seed §A.5): arctan steps 2:1 at L3 and L3 + 0.6 eV (width
        ``si_step_width_eV``) tapered into the hydrogenic L edge over onset + ti_join_eV, their height
        set by the Bethe sum rule of seed §D.2 for Si L2,3: the integral from the onset - 5 eV to
        onset + 80 eV equals the hydrogenic one over the same losses."""
        p = self.params
        onset = CORE_EDGES["Si"][1]
        w = _taper(E, onset + p.ti_join_eV[0], onset + p.ti_join_eV[1])
        steps = ((2 / 3) * _arctan_step(E, L3_on, p.si_step_width_eV)
                 + (1 / 3) * _arctan_step(E, L3_on + SI_L_SPIN_ORBIT_eV, p.si_step_width_eV)) * (E > L3_on - 3.0)
        h = 0.02
        Eg = np.arange(min(L3_on, onset) - 5.0, onset + 80.0, h) + h / 2
        wg = _taper(Eg, onset + p.ti_join_eV[0], onset + p.ti_join_eV[1])
        sg = ((2 / 3) * _arctan_step(Eg, L3_on, p.si_step_width_eV)
              + (1 / 3) * _arctan_step(Eg, L3_on + SI_L_SPIN_ORBIT_eV, p.si_step_width_eV)) * (Eg > L3_on - 3.0)
        Hg = self._hydro("Si", Eg)
        a = float((wg * Hg).sum() / (wg * sg).sum())
        return (w * a * steps + (1 - w) * self._hydro("Si", E)) * (E > 0)


_default: EELSSynthesizer | None = None


def synthesize_spectrum_image(
    energy_eV: np.ndarray,
    column: ColumnState,
    electrons: np.ndarray | float,
    energy_shift_eV: np.ndarray | float = 0.0,
    params: EELSParameters | None = None,
) -> np.ndarray:
    """Functional front end of :meth:`EELSSynthesizer.synthesize` (a module-level synthesizer keeps the
    cache when ``params`` is None)."""
    global _default
    if params is not None:
        return EELSSynthesizer(params).synthesize(energy_eV, column, electrons, energy_shift_eV)
    if _default is None:
        _default = EELSSynthesizer()
    return _default.synthesize(energy_eV, column, electrons, energy_shift_eV)


__all__ = [
    "CORE_EDGES",
    "EELSParameters",
    "EELSSynthesizer",
    "effective_collection_angle_rad",
    "electrons_per_row",
    "energy_drift_samples",
    "synthesize_spectrum_image",
    "zlp_channel_contents",
]
