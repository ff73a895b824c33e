"""Physically shaped synthetic spectrum images with known ground truth for the analysis tests.

Shapes and numbers follow physics.md: power-law background A E^-r (§1.6; r = 4 under Li-K, 3 under
Ti-L/O-K), Li-K step + peaks (§1.8), Ti-L2,3 Ti4+ four-peak and Ti3+ two-peak shapes with L2/L3
1.30 / 1.25, L2 5.4 eV above L3 (rutile/anatase spin-orbit) and 2:1 arctan steps (§1.8, [Y14]), O-K pre-peaks, peak a at 538 eV and peak b at
529.0 + 2.820/R^2 (§1.8, [Y14]); Li profile of the relaxed-pulse form with 8.5 c0 at Pt and
2 sqrt(Dt) = 251 nm (§3.5); Ti3+ where c >= 6 c0; R = 0.280 + 0.030 clip((c - 1)/7.5, 0, 1) nm.
Counts are exact channel integrals for the background and channel-centre samples for the edges.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest

from insitem.analysis.axes import EnergyAxis, PositionAxis

N_ROWS = 330
ROW_M = 5.70e-9  # [Y14]
PT_ROWS = 30  # rows 0..29 are Pt; the interface lies halfway between rows 29 and 30
INTERFACE_M = (PT_ROWS - 0.5) * ROW_M
LOW = EnergyAxis(offset_eV=35.0, scale_eV=0.1, size=2048)
CORE = EnergyAxis(offset_eV=420.0, scale_eV=0.1, size=2048)
POS = PositionAxis(offset_m=0.0, scale_m=ROW_M, size=N_ROWS)
SPREAD_M = 251e-9  # 2 sqrt(Dt), physics.md §3.5


def gauss(E: np.ndarray, centre: np.ndarray | float, fwhm: float) -> np.ndarray:
    """Unit-area Gaussian (per eV)."""
    s = fwhm / 2.3548200450309493
    return np.exp(-0.5 * ((E - centre) / s) ** 2) / (s * np.sqrt(2 * np.pi))


def step(E: np.ndarray, centre: np.ndarray | float, width: float) -> np.ndarray:
    return 0.5 + np.arctan((E - centre) / width) / np.pi


def power_law_counts(axis: EnergyAxis, A: np.ndarray | float, r: np.ndarray | float) -> np.ndarray:
    """Exact channel integrals of A E^-r, shape broadcast(A, r) + (n,)."""
    edges = np.asarray(axis.boundary_eV(np.arange(axis.size + 1)), float)
    k = 1.0 - np.asarray(r, float)[..., None]
    return np.asarray(A, float)[..., None] * (edges[1:] ** k - edges[:-1] ** k) / k


def distance_m() -> np.ndarray:
    return POS.values_m - INTERFACE_M


def c_rel_truth(d: np.ndarray) -> np.ndarray:
    """c/c0: 1 + 7.5 exp(-(x / 251 nm)^2) in the electrolyte (§3.5), 0 in Pt."""
    return np.where(d >= 0, 1.0 + 7.5 * np.exp(-((np.maximum(d, 0) / SPREAD_M) ** 2)), 0.0)


def li_edge(E: np.ndarray) -> np.ndarray:
    """Li-K single-scattering shape per unit c/c0, counts per channel (§1.8 default shape)."""
    return 400.0 * step(E, 57.0, 1.0) + 2500.0 * gauss(E, 61.5, 3.0) + 6000.0 * gauss(E, 70.0, 10.0)


def low_image(rng: np.random.Generator | None, scale: float = 1.0) -> np.ndarray:
    """Li window (35-240 eV), 330 rows: Pt rows have twice the background and no Li."""
    d = distance_m()
    c = c_rel_truth(d)
    E = LOW.values_eV
    A = np.where(d >= 0, 8.2e10, 1.6e11) * scale  # ~2e4 counts/channel at 45 eV
    mu = power_law_counts(LOW, A, 4.0) + scale * c[:, None] * li_edge(E)[None, :]
    return mu if rng is None else rng.poisson(mu).astype(float)


def ti_shape(E: np.ndarray, f3: np.ndarray, rigid_shift_eV: np.ndarray | float = 0.0) -> np.ndarray:
    """Ti-L2,3 counts per channel per row (unit L3 area 6000 counts), §1.8 shapes, mixed by f3."""
    f3 = np.asarray(f3, float)[:, None]
    s = np.asarray(rigid_shift_eV, float)
    s = s[:, None] if s.ndim else s
    w3 = 6000.0
    t2g, eg = 0.7 / 1.7, 1.0 / 1.7
    ti4 = w3 * (t2g * gauss(E, 457.0 + s, 0.9) + eg * gauss(E, 459.0 + s, 1.5)) + 1.30 * w3 * (
        t2g * gauss(E, 462.4 + s, 1.6) + eg * gauss(E, 464.4 + s, 2.2)
    )
    ti4 += 60.0 * (2 * step(E, 457.0 + s, 1.0) + step(E, 462.4 + s, 1.0)) / 3.0
    ti3 = w3 * gauss(E, 457.3 + s, 2.0) + 1.25 * w3 * gauss(E, 462.7 + s, 2.6)
    ti3 += 60.0 * (2 * step(E, 457.0 - 1.7 + s, 1.0) + step(E, 462.4 - 1.7 + s, 1.0)) / 3.0
    return (1 - f3) * ti4 + f3 * ti3


def r_truth_nm(c: np.ndarray) -> np.ndarray:
    return 0.280 + 0.030 * np.clip((c - 1.0) / 7.5, 0.0, 1.0)


def o_shape(E: np.ndarray, c: np.ndarray) -> np.ndarray:
    """O-K counts per channel per row: pre-peaks, peak a, peak b (R from c), continuum step (§1.8)."""
    c = np.asarray(c, float)[:, None]
    eb = 529.0 + 2.820 / r_truth_nm(c) ** 2
    pre = np.maximum(0.0, 1 - 0.1 * (c - 1))
    out = pre * (800.0 * gauss(E, 530.5, 1.2) + 900.0 * gauss(E, 533.0, 1.8))
    out = out + 3000.0 * gauss(E, 538.0, 4.0) + 5000.0 * gauss(E, eb, 8.0)
    out = out + 150.0 * step(E, 531.0, 1.0) * (E / 531.0) ** -1.5
    return out


def core_image(
    rng: np.random.Generator | None,
    shift_eV: float = 0.0,
    row_shift_eV: np.ndarray | None = None,
    scale: float = 1.0,
    rigid_ti_shift_eV: np.ndarray | None = None,
) -> np.ndarray:
    """Core window (420-625 eV): power law r = 3 + Ti-L2,3 + O-K; `shift_eV` moves everything up."""
    d = distance_m()
    c = c_rel_truth(d)
    sh = shift_eV + (np.zeros(N_ROWS) if row_shift_eV is None else np.asarray(row_shift_eV))
    E = CORE.values_eV[None, :] - sh[:, None]
    elec = (d >= 0)[:, None]
    f3 = (c >= 6.0).astype(float)
    if rigid_ti_shift_eV is None:
        ti = ti_shape(E, f3)
    else:
        ti = ti_shape(E, np.zeros(N_ROWS), rigid_ti_shift_eV)
    edges = elec * (ti + o_shape(E, c))
    A = np.where(d >= 0, 4.0e12, 8.0e12)  # ~5e3 counts/channel at 430 eV
    bg = power_law_counts(CORE, A, 3.0)
    mu = scale * (bg + edges)
    return mu if rng is None else rng.poisson(mu).astype(float)


@dataclass(frozen=True)
class Truth:
    distance_m: np.ndarray
    c_rel: np.ndarray
    r_nm: np.ndarray
    ti3_boundary_m: float
    width_m: float


def truth() -> Truth:
    d = distance_m()
    c = c_rel_truth(d)
    return Truth(
        distance_m=d,
        c_rel=c,
        r_nm=np.where(d >= 0, r_truth_nm(c), np.nan),
        ti3_boundary_m=SPREAD_M * np.sqrt(np.log(7.5 / 5.0)),  # c = 6 c0 -> 159.8 nm (§7 check 9)
        width_m=SPREAD_M * np.sqrt(np.log(10.0)),  # excess at 10 % of its maximum -> 381 nm (§3.5)
    )


@pytest.fixture(scope="session")
def synth() -> SimpleNamespace:
    """The synthesis helpers and calibrations, for tests that build their own variants."""
    return SimpleNamespace(
        LOW=LOW, CORE=CORE, POS=POS, INTERFACE_M=INTERFACE_M, ROW_M=ROW_M, PT_ROWS=PT_ROWS,
        gauss=gauss, step=step, power_law_counts=power_law_counts, low_image=low_image,
        core_image=core_image, truth=truth, li_edge=li_edge, ti_shape=ti_shape, o_shape=o_shape,
    )


@pytest.fixture(scope="session")
def low_noisy() -> np.ndarray:
    return low_image(np.random.default_rng(11))


@pytest.fixture(scope="session")
def core_noisy() -> np.ndarray:
    return core_image(np.random.default_rng(12))
