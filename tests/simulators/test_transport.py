"""Li transport (physics.md §3.5): Fick's law closed forms, Faraday/charge conservation (§7 check 8),
the [Y14] Gaussian end profile (§7 check 9), and the derived EELS inputs (§1.8)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import erfc

from insitem.simulators.transport import (
    LiTransport,
    TransportParameters,
    crossing_m,
    paper_profile_excess,
)

C0 = 9.97e3  # mol/m^3, physics.md §3.1


def test_constant_flux_matches_fick_erfc_solution() -> None:
    """Fick's second law, constant flux J into a half-space:
    u = 2J sqrt(t/(pi D)) exp(-x^2/4Dt) - (J x/D) erfc(x/2sqrt(Dt)) (§3.5 closed form)."""
    p = TransportParameters(D0_m2_per_s=1e-19)
    tr = LiTransport(p)
    J, dt, n = 2e-6, 1.5, 4000
    for _ in range(n):
        tr.step(J, dt)
    t, D, x = n * dt, p.D0_m2_per_s, tr.x_m
    exact = 2 * J * np.sqrt(t / (np.pi * D)) * np.exp(-(x**2) / (4 * D * t)) - J * x / D * erfc(x / (2 * np.sqrt(D * t)))
    u = tr.u_mol_per_m3
    assert abs(u[0] / exact[0] - 1) < 0.01
    assert np.max(np.abs(u - exact)) < 0.02 * exact[0]


def test_relaxed_pulse_stays_gaussian_with_growing_width() -> None:
    """Fick's law, zero flux at x = 0: a half-Gaussian N/sqrt(pi D t0) exp(-x^2/4Dt0) evolves into
    the same form with t0 -> t0 + t (the relaxed pulse of §3.5)."""
    D = 5.2e-20
    p = TransportParameters(D0_m2_per_s=D)
    tr = LiTransport(p)
    N = 1.6e-2  # mol/m^2, ~ the [Y14] excess
    t0, t = 2e4, 2e5
    gauss = lambda x, tt: N / math.sqrt(math.pi * D * tt) * np.exp(-(x**2) / (4 * D * tt))  # noqa: E731
    tr.set_excess(gauss(tr.x_m, t0))
    tr.relax(t, dt_s=50.0)
    exact = gauss(tr.x_m, t0 + t)
    u = tr.u_mol_per_m3
    assert np.max(np.abs(u - exact)) < 0.02 * exact[0]
    assert crossing_m(tr, 1 + 0.5 * u[0] / C0) == pytest.approx(2 * math.sqrt(D * (t0 + t) * math.log(2)), rel=0.02)


def test_charge_conservation_faraday_law_check8() -> None:
    """§7 check 8 (transport side): ∫u dx = ∫J dt (Faraday's law with J = i/FA) to 1e-6,
    through insertion and extraction, with a concentration-dependent D."""
    rng = np.random.default_rng(1)
    tr = LiTransport(TransportParameters(D0_m2_per_s=1e-19, D_exponent_b=2.0))
    total = 0.0
    for k in range(3000):
        j = 3e-6 * math.sin(k / 150.0) + 1e-6 + 2e-7 * rng.standard_normal()
        dt = float(rng.uniform(0.5, 3.0))
        total += tr.step(j, dt) * dt
    assert tr.outflow_mol_per_m2 < 1e-12 * total
    assert abs(tr.excess_mol_per_m2 - total) < 1e-6 * total
    assert abs(tr.balance_error_mol_per_m2()) < 1e-12 * total


def test_paper_gaussian_crosses_6c0_at_160nm_check9() -> None:
    """§7 check 9: the Gaussian with 2 sqrt(Dt) = 251 nm and 8.5 c0 at Pt crosses 6 c0 at 160 +/- 2 nm;
    its excess is 1670 nm x c0 (§3.4) and its 5 % excess point lies at ~435 nm (§3.5)."""
    tr = LiTransport.paper_profile()
    assert tr.concentration_ratio(0.0) == pytest.approx(8.5, abs=1e-9)
    assert crossing_m(tr, 6.0) == pytest.approx(160e-9, abs=2e-9)
    assert crossing_m(tr, 1 + 0.05 * 7.5) == pytest.approx(435e-9, abs=3e-9)
    assert tr.excess_mol_per_m2 / C0 == pytest.approx(1670e-9, rel=0.005)
    x = np.linspace(0, 2e-6, 7)
    assert np.allclose(tr.concentration_ratio(x), 1 + paper_profile_excess(x), atol=0.02)


def test_concentration_is_parent_beyond_the_domain() -> None:
    tr = LiTransport.paper_profile()
    assert np.all(tr.concentration_ratio(np.array([3.0e-6, 5e-6, 1.0])) == 1.0)


def test_extraction_never_takes_c_below_c0() -> None:
    """De-insertion can only remove excess Li: an empty electrolyte delivers nothing, and a
    partly filled one delivers at most what is near the surface; the shortfall is booked."""
    tr = LiTransport(TransportParameters())
    assert tr.step(-1e-6, 1.0) == 0.0
    assert tr.deficit_mol_per_m2 == pytest.approx(1e-6)
    for _ in range(100):
        tr.step(1e-6, 1.0)
    delivered = sum(tr.step(-5e-6, 1.0) for _ in range(100))
    assert tr.u_mol_per_m3.min() >= 0.0
    assert delivered > -5e-6 * 100
    assert abs(tr.balance_error_mol_per_m2()) < 1e-15


def test_concentration_dependent_diffusivity_spreads_further() -> None:
    """D_eff(u) = D0 exp(b u/u_max) (§3.5): with b = 2 the same charge penetrates deeper."""
    depth = {}
    for b in (0.0, 2.0):
        tr = LiTransport(TransportParameters(D0_m2_per_s=1e-19, D_exponent_b=b))
        for _ in range(2000):
            tr.step(2e-6, 1.5)
        depth[b] = crossing_m(tr, 2.0)
    assert depth[2.0] > 1.2 * depth[0.0]


def test_state_dict_round_trip_continues_identically() -> None:
    tr = LiTransport(TransportParameters(D_exponent_b=1.0))
    for _ in range(50):
        tr.step(1e-6, 1.5)
    twin = LiTransport.from_state_dict(tr.state_dict())
    for _ in range(50):
        tr.step(-2e-7, 1.5)
        twin.step(-2e-7, 1.5)
    assert np.array_equal(tr.u_mol_per_m3, twin.u_mol_per_m3)
    assert twin.inserted_mol_per_m2 == tr.inserted_mol_per_m2
