"""Relativistic kinematics, hydrogenic K/L inner-shell cross sections and inelastic mean free paths.

Everything here is a pure, vectorised numpy function. Units follow the project rules: energies in eV
(beam energy too: ``E0_eV = 300e3``), angles in rad, lengths in m, cross sections in m^2 per atom
(``dsigma_dE`` in m^2/eV per atom). physics.md uses keV, mrad, nm, barn and cm^2; conversions happen at
the boundary of each function and are named.

Sources (physics.md): kinematics §1.1; mean free path §1.4 (Iakoubovskii 2008 eq. 9 with the finite
aperture correction); hydrogenic generalised oscillator strengths and the q-integration §1.5
(Egerton, *EELS in the Electron Microscope*, 3rd ed. 2011, SIGMAK3/SIGMAL3 formulas). The formulas are
re-derived and written here as array expressions; no third-party code is reused (exspy is only a
cross-check in the tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

#: Rydberg energy, eV (physics.md §1.5, R = 13.606 eV)
RYDBERG_eV = 13.606
#: electron rest energy, eV (physics.md §1.1 uses 511 keV; 511.06 keV in the GOS prefactor of §1.5)
M0C2_eV = 511.0e3
#: 4 pi a0^2 in m^2: the prefactor 3.5166e8 barn of physics.md §1.5 (1 barn = 1e-28 m^2)
FOUR_PI_A0SQ_m2 = 3.5166e8 * 1e-28
#: Planck constant x speed of light, eV m (for the wavelength of §1.1)
HC_eV_m = 1.239841984e-6

# Egerton's empirical exponent u of the hydrogenic L-shell correction ((E - E_L3 + 0.1)/(1.8 Z^2))^u,
# tabulated for Z = 11 .. 36 (physics.md §1.5 "per-element u table (XU)"; Egerton 2011 SIGMAL3 data).
_L_CORRECTION_U = np.array(
    [0.82, 0.52, 0.52, 0.42, 0.30, 0.29, 0.22, 0.30, 0.22, 0.16, 0.12, 0.13, 0.13,
     0.14, 0.16, 0.18, 0.19, 0.22, 0.14, 0.11, 0.12, 0.12, 0.12, 0.10, 0.10, 0.10]
)


# --------------------------------------------------------------------------------------------------
# §1.1 kinematics
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kinematics:
    """Relativistic beam kinematics at kinetic energy ``E0_eV`` (physics.md §1.1).

    ``T_eV`` is Egerton's T = m0 v^2 / 2 (154.07 keV at 300 keV) and ``two_gamma_T_eV`` = gamma m0 v^2
    (489.0 keV at 300 keV); theta_E = E / (2 gamma T) is the one definition used in this package.
    """

    E0_eV: float
    gamma: float
    beta2: float
    T_eV: float
    two_gamma_T_eV: float
    wavelength_m: float


def kinematics(E0_eV: float = 300e3) -> Kinematics:
    """Kinematic quantities of physics.md §1.1 for a beam of kinetic energy ``E0_eV`` (eV)."""
    gamma = 1.0 + E0_eV / M0C2_eV
    beta2 = 1.0 - 1.0 / gamma**2
    T = E0_eV * (1.0 + E0_eV / (2 * M0C2_eV)) / (1.0 + E0_eV / M0C2_eV) ** 2
    two_gamma_T = E0_eV * (2 * M0C2_eV + E0_eV) / (M0C2_eV + E0_eV)
    wavelength = HC_eV_m / np.sqrt(E0_eV * (E0_eV + 2 * M0C2_eV))
    return Kinematics(E0_eV, gamma, beta2, T, two_gamma_T, float(wavelength))


def theta_E_rad(E_eV: np.ndarray | float, E0_eV: float = 300e3) -> np.ndarray:
    """Characteristic scattering angle theta_E = E / (2 gamma T), rad (physics.md §1.1).

    0.123 mrad at 60 eV, 0.932 mrad at 456 eV, 1.088 mrad at 532 eV for E0 = 300 keV.
    """
    return np.asarray(E_eV, dtype=float) / kinematics(E0_eV).two_gamma_T_eV


def effective_collection_angle_rad(
    E_eV: np.ndarray | float, E0_eV: float, alpha_rad: float, beta_rad: float
) -> np.ndarray:
    """Egerton's effective collection semi-angle beta* for a convergent beam (physics.md §1.5, §6.1).

    Egerton 2011 appendix (BETAEFF): the fraction of the Lorentzian angular distribution of a loss E
    collected by an aperture beta when the incident beam fills a cone alpha, expressed as the angle
    that collects the same fraction for a parallel beam. Uses theta_E = E / (2 gamma T) (§1.1 pitfall:
    exspy's helper uses a theta_E twice as large). Returns ``beta_rad`` unchanged when alpha = 0.
    """
    E = np.asarray(E_eV, dtype=float)
    if alpha_rad <= 0:
        return np.full_like(E, beta_rad)
    t2 = theta_E_rad(np.maximum(E, 1e-6), E0_eV) ** 2
    a2, b2 = alpha_rad**2, beta_rad**2
    eta1 = np.sqrt((a2 + b2 + t2) ** 2 - 4.0 * a2 * b2) - a2 - b2 - t2
    eta2 = 2.0 * b2 * np.log(0.5 / t2 * (np.sqrt((a2 + t2 - b2) ** 2 + 4.0 * b2 * t2) + a2 + t2 - b2))
    eta3 = 2.0 * a2 * np.log(0.5 / t2 * (np.sqrt((b2 + t2 - a2) ** 2 + 4.0 * a2 * t2) + b2 + t2 - a2))
    log_b = np.log1p(b2 / t2)
    f = (eta1 + eta2 + eta3) / (2.0 * a2 * log_b)
    if alpha_rad > beta_rad:
        f = f * a2 / b2
    return np.sqrt(t2) * np.sqrt(np.expm1(f * log_b))


# --------------------------------------------------------------------------------------------------
# §1.4 inelastic mean free path
# --------------------------------------------------------------------------------------------------

_THETA_C_mrad = 20.0  # Iakoubovskii cut-off angle, mrad (physics.md §1.4)


def _iak_F(E0_keV: float) -> float:
    return (1 + E0_keV / 1022) / (1 + E0_keV / 511) ** 2


def _iak_theta_E_mrad(density_g_cm3: float, E0_keV: float) -> float:
    return 5.5 * density_g_cm3**0.3 / (_iak_F(E0_keV) * E0_keV)


def imfp_iakoubovskii_m(density_g_cm3: np.ndarray | float, E0_eV: float = 300e3) -> np.ndarray:
    """Total inelastic mean free path (all scattering angles), m (physics.md §1.4, Iakoubovskii eq. 9).

    168.8 nm for rho = 2.94 g/cm^3 (LATP) at 300 keV (§7 check 3). Valid for any solid from its mass
    density alone; accuracy ~10 % (Iakoubovskii 2008).
    """
    rho = np.asarray(density_g_cm3, dtype=float)
    E0 = E0_eV / 1e3
    F = _iak_F(E0)
    te = 5.5 * rho**0.3 / (F * E0)
    inv_lam_nm = 11 * rho**0.3 / (200 * F * E0) * np.log(_THETA_C_mrad**2 / te**2)
    return 1e-9 / inv_lam_nm


def imfp_angular_correction(
    density_g_cm3: np.ndarray | float, E0_eV: float, alpha_rad: float, beta_rad: float
) -> np.ndarray:
    """Factor lambda(alpha, beta) / lambda for finite apertures (physics.md §1.4).

    1.155 for LATP (2.94 g/cm^3), 300 keV, alpha = 0.5 mrad, beta = 10 mrad (§7 check 3).
    """
    rho = np.asarray(density_g_cm3, dtype=float)
    E0 = E0_eV / 1e3
    te = 5.5 * rho**0.3 / (_iak_F(E0) * E0)
    a, b, tc = alpha_rad * 1e3, beta_rad * 1e3, _THETA_C_mrad
    A = a**2 + b**2 + 2 * te**2 + abs(a**2 - b**2)
    B = a**2 + b**2 + 2 * tc**2 + abs(a**2 - b**2)
    return np.log(tc**2 / te**2) / np.log(A * tc**2 / (B * te**2))


def imfp_m(density_g_cm3: np.ndarray | float, E0_eV: float, alpha_rad: float, beta_rad: float) -> np.ndarray:
    """Inelastic mean free path for the losses collected within beta, m (§1.4): 194.9 nm for LATP."""
    return imfp_iakoubovskii_m(density_g_cm3, E0_eV) * imfp_angular_correction(
        density_g_cm3, E0_eV, alpha_rad, beta_rad
    )


# --------------------------------------------------------------------------------------------------
# §1.5 hydrogenic generalised oscillator strengths
# --------------------------------------------------------------------------------------------------


def _coulomb_factor(Q: np.ndarray, kh2: np.ndarray, n: float) -> tuple[np.ndarray, np.ndarray]:
    """exp(-2 beta'/k) / (1 - exp(-2 pi/k)) factor of the hydrogenic GOS and its bound-state analogue.

    ``n`` = 1 for the K shell (terms 2k and Q - k^2 + 1) and 1/2 for the L shell (terms k and
    Q - k^2 + 1/4), following Egerton 2011 eqs. 3.57/3.58 (physics.md §1.5). Returns (c, d) with
    GOS ∝ c / d. Above the hydrogenic threshold (k^2 >= 0) beta' = arctan(...) is taken in [0, pi);
    below it the analytic continuation gives a real exponential and d = 1. Only the branches that
    some point needs are evaluated.
    """
    akh = np.sqrt(np.abs(kh2))
    # the K-shell expression is singular at k -> 0; clamp as in Egerton's program (k >= 0.01)
    akh = np.maximum(akh, 0.01)
    shift = n * n  # 1 or 1/4
    two_n_k = 2 * n * akh
    above = kh2 >= 0
    all_above, any_above = bool(np.all(above)), bool(np.any(above))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if any_above:
            bp = np.arctan2(two_n_k, Q - kh2 + shift)  # arctan in [0, pi) since two_n_k > 0
            c_above = np.exp(-2.0 / akh * bp)
            d_above = -np.expm1(-2.0 * np.pi / akh)
        if not all_above:
            c_below = np.exp(-1.0 / akh * np.log((Q + shift - kh2 + two_n_k) / (Q + shift - kh2 - two_n_k)))
    if all_above:
        return c_above, d_above
    if not any_above:
        return c_below, np.ones(np.shape(kh2))
    return np.where(above, c_above, c_below), np.where(above, d_above, 1.0)


def gos_K(E_eV: np.ndarray, qa0sq: np.ndarray, Z: int) -> np.ndarray:
    """Hydrogenic K-shell energy-differential GOS df/dE per atom, 1/eV (Egerton 2011 eq. 3.57).

    Screened charge Z_s = Z - 0.5 (physics.md §1.5); both 1s electrons included (factor 256 = 128 x 2).
    ``E_eV`` and ``qa0sq`` (q^2 a0^2) broadcast together.
    """
    R = RYDBERG_eV
    zs = Z - 0.5 if Z > 1 else 1.0
    n_el = 2 if Z > 1 else 1
    Q = qa0sq / zs**2
    kh2 = E_eV / (R * zs**2) - 1.0
    c, d = _coulomb_factor(Q, kh2, 1.0)
    base = (Q - kh2 + 1) ** 2 + 4 * kh2
    a = base * base * base  # base^3 (products: numpy's general power is ~10x slower)
    return 128.0 * n_el * E_eV / (R * R * zs**4) * c / d * (Q + kh2 / 3 + 1.0 / 3) / a


def gos_L(E_eV: np.ndarray, qa0sq: np.ndarray, Z: int, E_L3_eV: float, E_L1_eV: float) -> np.ndarray:
    """Hydrogenic L-shell (L2,3, plus L1 above its onset) df/dE per atom, 1/eV (Egerton 2011 §3.6.2).

    Screened charge Z_s = Z - 0.35*7 - 1.7 and Egerton's empirical factor ((E + 0.1 - E_L3)/(1.8 Z^2))^u
    (physics.md §1.5). Z outside Egerton's u table (11..36) uses u = 0.1 (within 10 % of Hartree-Slater
    for heavier atoms). The model has no white lines: add ELNES separately (§1.8).
    """
    R = RYDBERG_eV
    zs = Z - 0.35 * 7 - 1.7
    iz = Z - 11
    u = float(_L_CORRECTION_U[iz]) if 0 <= iz < len(_L_CORRECTION_U) else 0.1
    Q = qa0sq / zs**2
    kh2 = E_eV / (R * zs**2) - 0.25
    c, d = _coulomb_factor(Q, kh2, 0.5)
    below_L1 = E_eV <= E_L1_eV
    # integer powers of the (energy x q) arrays as products (numpy's general power is ~10x slower)
    Q2 = Q * Q
    Q3 = Q2 * Q
    base = (Q - kh2 + 0.25) ** 2 + kh2
    base4 = (base * base) ** 2

    def l23() -> tuple[np.ndarray, np.ndarray]:
        g23 = (
            2.25 * Q2 * Q2
            - (0.75 + 3 * kh2) * Q3
            + (0.59375 - 0.75 * kh2 - 0.5 * kh2**2) * Q2
            + (0.11146 + 0.85417 * kh2 + 1.8833 * kh2**2 + kh2**3) * Q
            + 0.0035807
            + kh2 / 21.333
            + kh2**2 / 4.5714
            + kh2**3 / 2.4
            + kh2**4 / 4
        )
        return g23, base4 * base  # base^5

    def l1() -> tuple[np.ndarray, np.ndarray]:
        g1 = (
            Q3
            - (5.0 / 3 * kh2 + 11.0 / 12) * Q2
            + (kh2**2 / 3 + 1.5 * kh2 + 65.0 / 48) * Q
            + kh2**3 / 3
            + 0.75 * kh2**2
            + 23.0 / 48 * kh2
            + 5.0 / 64
        )
        return g1, base4  # base^4

    # only the expressions that some point needs (below or above the L1 onset)
    if np.all(below_L1):
        g, a = l23()
    elif not np.any(below_L1):
        g, a = l1()
    else:
        (g23, a23), (g1, a1) = l23(), l1()
        g, a = np.where(below_L1, g23, g1), np.where(below_L1, a23, a1)
    rf = (np.maximum(E_eV + 0.1 - E_L3_eV, 1e-12) / (1.8 * Z * Z)) ** u
    return rf * 32.0 * g * c / a / d * E_eV / (R * R * zs**4)


#: energies per block in `dsigma_dE` (block x n_q arrays of ~100 kB)
_E_BLOCK = 256


@lru_cache(maxsize=4)
def _gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    x, w = np.polynomial.legendre.leggauss(n)
    return 0.5 * (x + 1.0), 0.5 * w


def q_limits(E_eV: np.ndarray, E0_eV: float, beta_rad: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """(q a0)^2 at the minimum (theta = 0) and at the aperture edge theta = beta (physics.md §1.5)."""
    kin = kinematics(E0_eV)
    R, T, g = RYDBERG_eV, kin.T_eV, kin.gamma
    E = np.asarray(E_eV, dtype=float)
    qmin = E**2 / (4 * R * T) + E**3 / (8 * g**3 * R * T**2)
    p02 = T / (R * (1 - 2 * T / 511.06e3))
    pp2 = p02 - E / R * (g - E / (2 * 511.06e3))
    qmax = qmin + 4 * np.sqrt(p02 * pp2) * np.sin(np.asarray(beta_rad) / 2) ** 2
    return qmin, qmax


def dsigma_dE(
    E_eV: np.ndarray,
    shell: str,
    Z: int,
    onset_eV: float,
    E0_eV: float = 300e3,
    beta_rad: float = 10e-3,
    alpha_rad: float = 0.0,
    L1_onset_eV: float | None = None,
    n_q: int = 48,
) -> np.ndarray:
    """Energy-differential cross section per atom integrated over the collection cone, m^2/eV.

    dsigma/dE = 4 pi a0^2 (R/T)(R/E) ∫ df/dE d ln(q^2 a0^2) from q_min to q(beta) (physics.md §1.5),
    with relativistic q limits. With ``alpha_rad`` > 0 the aperture is replaced by Egerton's effective
    angle beta*(E) (§6.1 alpha = 0.5 mrad). ``shell`` is "K" or "L" (L2,3 onset = ``onset_eV``, L1 onset
    ``L1_onset_eV``). Zero below the onset. The ln q^2 integral is done with ``n_q``-point
    Gauss-Legendre quadrature (integrand smooth in ln q^2; 48 points agree with adaptive quadrature
    to < 1e-6). Energies are evaluated in blocks of ``_E_BLOCK``: arrays stay cache-sized, and a block
    on one side of the GOS branch points (hydrogenic threshold, L1 onset) evaluates that branch only.
    """
    E = np.atleast_1d(np.asarray(E_eV, dtype=float))
    out = np.zeros_like(E)
    m = E > onset_eV
    if not np.any(m):
        return out
    Em = E[m]
    beta = effective_collection_angle_rad(Em, E0_eV, alpha_rad, beta_rad) if alpha_rad > 0 else beta_rad
    qmin, qmax = q_limits(Em, E0_eV, beta)
    x, w = _gauss_legendre(n_q)
    lo, hi = np.log(qmin), np.log(qmax)
    if shell == "K":
        def gos(Eg: np.ndarray, qa0sq: np.ndarray) -> np.ndarray:
            return gos_K(Eg, qa0sq, Z)
    elif shell == "L":
        if L1_onset_eV is None:
            raise ValueError("L shell needs L1_onset_eV")
        def gos(Eg: np.ndarray, qa0sq: np.ndarray) -> np.ndarray:
            return gos_L(Eg, qa0sq, Z, onset_eV, L1_onset_eV)
    else:
        raise ValueError(f"hydrogenic GOS only for K and L shells, not {shell!r}")
    integral = np.empty_like(Em)
    for s in range(0, Em.size, _E_BLOCK):
        b = slice(s, s + _E_BLOCK)
        lnq = lo[b, None] + (hi - lo)[b, None] * x[None, :]
        f = gos(Em[b, None], np.exp(lnq))
        integral[b] = (f * w[None, :]).sum(axis=1) * (hi[b] - lo[b])
    T = kinematics(E0_eV).T_eV
    out[m] = FOUR_PI_A0SQ_m2 * (RYDBERG_eV / T) * (RYDBERG_eV / Em) * integral
    return out


def sigma_integrated(
    shell: str,
    Z: int,
    onset_eV: float,
    window_eV: float,
    E0_eV: float = 300e3,
    beta_rad: float = 10e-3,
    alpha_rad: float = 0.0,
    L1_onset_eV: float | None = None,
    n_E: int = 64,
) -> float:
    """Partial cross section sigma(beta, Delta) = ∫ dsigma/dE from the onset over ``window_eV``, m^2.

    O-K (onset 532 eV), beta 10 mrad, Delta 30 eV, 300 keV: 4.86e-26 m^2 = 4.86e-22 cm^2 (§7 check 2).
    Gauss-Legendre in E (integrand smooth above the onset).
    """
    x, w = _gauss_legendre(n_E)
    E = onset_eV + 1e-9 + window_eV * x
    ds = dsigma_dE(E, shell, Z, onset_eV, E0_eV, beta_rad, alpha_rad, L1_onset_eV)
    return float((ds * w).sum() * window_eV)
