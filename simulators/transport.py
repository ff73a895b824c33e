"""Li transport into the solid electrolyte next to the negative (in-situ formed) electrode.

Physics (physics.md §3.5): the excess neutral Li ``u(x) = c(x) - c0`` spreads from the Pt
interface (x = 0) into the electrolyte at an effective, electron-limited diffusivity ``D_eff``::

    du/dt = d/dx (D_eff(u) du/dx),            0 < x < L_dom  (L_dom >= 3 um by default)
    -D_eff du/dx |x=0 = J = i_neg / (F A)      Faraday's law (§3.4), J in mol m^-2 s^-1
    u(L_dom) = 0                               electrolyte far away stays at parent composition
    D_eff(u) = D0 exp(b u / u_max)             optional concentration dependence (b = 0: constant)

Numerics: finite volumes on a graded node grid (2 nm next to Pt, growing geometrically), theta
time stepping (0.5 = Crank-Nicolson, 1 = implicit Euler). The node-0 control volume is half a
cell, so ``u(0)`` is a grid value and ``∫u dx`` (trapezoid rule) equals ``sum(V_i u_i)`` exactly;
the scheme is written in flux form, so the excess changes by exactly ``J dt`` minus the outflow
through the far boundary, which is booked (§7 check 8 holds to round-off).

The CN matrix is symmetric positive-definite tridiagonal; it is factorised with LAPACK
``dpttrf`` and solved with ``dpttrs`` (through scipy.linalg.lapack) because
``scipy.linalg.solve_banded``'s argument validation costs ~10x the solve itself at ~200 nodes
and the cell calls this thousands of times per CV cycle; a hand-written Thomas loop in Python
would be slower still.

Simplifications (named):

* ``D_eff(u)`` is evaluated with ``u`` at the start of each step (lagged coefficient), which
  keeps the step linear; fine while D changes little per step (always true at dt <= a few s).
* De-insertion (J < 0) removes excess Li from the surface; when the surface is empty the
  extraction is capped so that ``c >= c0`` everywhere (Li cannot be taken out of the parent
  electrolyte). What could not be delivered is booked in ``deficit_mol_per_m2``.
* The profile is one-dimensional (uniform across the slit width and lamella thickness).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy.linalg import lapack

FARADAY_C_PER_MOL = 96485.33212  # physics.md §3.4
C0_LATP_MOL_PER_M3 = 9.97e3  # 9.97e-3 mol/cm^3, physics.md §3.1 [derived]
PAPER_PEAK_RATIO = 8.5  # c/c0 at Pt after 50 cycles, physics.md §0 / §3.5 [Y14]
PAPER_GAUSSIAN_WIDTH_M = 251e-9  # 2 sqrt(D t) of the Gaussian fit, physics.md §3.5 [derived]


class TransportParameters(BaseModel):
    """Parameters of the 1-D excess-Li field (SI units; defaults from physics.md §3.5 / §6.3)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    c0_mol_per_m3: float = Field(default=C0_LATP_MOL_PER_M3, gt=0, description="parent Li concentration c0 (§3.1)")
    u_max_over_c0: float = Field(default=7.5, gt=0, description="saturation excess u_max / c0 (8.5 c0 total, §3.5)")
    D0_m2_per_s: float = Field(default=1e-19, gt=0, description="D_eff at u = 0; 1e-15 cm^2/s default (§6.3)")
    D_exponent_b: float = Field(default=0.0, ge=0, le=20, description="b in D0 exp(b u/u_max) (§3.5: b = 2 option)")
    domain_m: float = Field(default=3e-6, gt=0, description="domain length L_dom (>= 3 um for the electrolyte)")
    dx_min_m: float = Field(default=2e-9, gt=0, description="node spacing at x = 0 (§3.5: ~2 nm)")
    dx_growth: float = Field(default=1.02, ge=1.0, le=1.5, description="geometric growth of the node spacing")
    dx_max_m: float = Field(default=50e-9, gt=0, description="largest node spacing")
    far_boundary: Literal["fixed", "no_flux"] = Field(
        default="fixed", description="fixed: u(L) = 0 (parent electrolyte); no_flux: closed film (thin layer)"
    )
    implicitness: float = Field(
        default=0.5, ge=0.5, le=1.0, description="time-stepping weight: 0.5 Crank-Nicolson, 1 implicit Euler"
    )

    @property
    def u_max_mol_per_m3(self) -> float:
        return self.u_max_over_c0 * self.c0_mol_per_m3


def graded_grid(p: TransportParameters) -> np.ndarray:
    """Node positions (m): dx_min at x = 0, growing by dx_growth up to dx_max, ending at domain_m."""
    xs = [0.0]
    dx = p.dx_min_m
    while xs[-1] + dx < p.domain_m * (1 - 1e-9):
        xs.append(xs[-1] + dx)
        dx = min(dx * p.dx_growth, p.dx_max_m)
    if p.domain_m - xs[-1] < 0.5 * (xs[-1] - xs[-2] if len(xs) > 1 else dx):
        xs[-1] = p.domain_m  # stretch the last interval instead of leaving a sliver
    else:
        xs.append(p.domain_m)
    if len(xs) < 4:
        raise ValueError("domain_m too short for dx_min_m: fewer than 4 nodes")
    return np.asarray(xs)


class LiTransport:
    """Excess-Li field u(x) = c - c0 next to the Pt interface (physics.md §3.5).

    ``step(flux, dt)`` advances it under a constant boundary flux for one interval; the cell uses
    ``surface_response(dt)`` + ``step`` to couple the surface concentration implicitly.
    """

    def __init__(self, params: TransportParameters | None = None) -> None:
        self.params = params if params is not None else TransportParameters()
        p = self.params
        self._x = graded_grid(p)
        h = np.diff(self._x)
        self._h = h
        n_unknown = len(self._x) - 1 if p.far_boundary == "fixed" else len(self._x)
        self._n = n_unknown
        vol = np.zeros(len(self._x))
        vol[:-1] += h / 2
        vol[1:] += h / 2
        self._vol = vol[:n_unknown].copy()  # control-volume widths (m)
        self._u = np.zeros(n_unknown)  # excess Li at the unknown nodes (mol/m^3)
        self._u_max = p.u_max_mol_per_m3
        # bookkeeping (mol/m^2): excess = initial + inserted - outflow (+ clipped round-off)
        self.initial_mol_per_m2 = 0.0
        self.inserted_mol_per_m2 = 0.0
        self.outflow_mol_per_m2 = 0.0
        self.deficit_mol_per_m2 = 0.0
        self.clipped_mol_per_m2 = 0.0
        self.time_s = 0.0
        self._cache_key: tuple[float, ...] | None = None
        self._factors: tuple[np.ndarray, np.ndarray] | None = None
        self._k: np.ndarray = np.zeros(len(h))
        self._pending: tuple[float, np.ndarray, np.ndarray] | None = None

    # ------------------------------------------------------------------ grid and fields
    @property
    def x_m(self) -> np.ndarray:
        """Node positions (m) from the Pt interface; the last one is the far boundary."""
        return self._x.copy()

    @property
    def u_mol_per_m3(self) -> np.ndarray:
        """Excess Li at every node (mol/m^3), including the far-boundary node."""
        out = np.zeros(len(self._x))
        out[: self._n] = self._u
        return out

    def set_excess(self, u_mol_per_m3: np.ndarray) -> None:
        """Replace the field (values at ``x_m``); resets the bookkeeping to this initial state."""
        u = np.asarray(u_mol_per_m3, dtype=float)
        if u.shape != self._x.shape:
            raise ValueError(f"expected {self._x.shape[0]} node values, got {u.shape}")
        if np.any(u < 0):
            raise ValueError("excess Li must be >= 0 (c >= c0)")
        self._u = u[: self._n].copy()
        self.initial_mol_per_m2 = self.excess_mol_per_m2
        self.inserted_mol_per_m2 = self.outflow_mol_per_m2 = 0.0
        self.deficit_mol_per_m2 = self.clipped_mol_per_m2 = 0.0
        self._pending = None

    @property
    def surface_fraction(self) -> float:
        """theta_s = u(0) / u_max (§3.5); may exceed 1 if the flux outruns transport."""
        return float(self._u[0] / self._u_max)

    @property
    def excess_mol_per_m2(self) -> float:
        """∫ u dx over the domain (mol/m^2), trapezoid rule = sum of control volumes."""
        return float(np.dot(self._vol, self._u))

    def balance_error_mol_per_m2(self) -> float:
        """excess - (initial + inserted - outflow + clipped): zero to round-off (§7 check 8)."""
        expected = self.initial_mol_per_m2 + self.inserted_mol_per_m2 - self.outflow_mol_per_m2
        return self.excess_mol_per_m2 - expected - self.clipped_mol_per_m2

    def concentration_ratio(self, x_m: np.ndarray | float) -> np.ndarray:
        """c/c0 at arbitrary positions (linear between nodes; 1 beyond the domain and for x < 0)."""
        x = np.asarray(x_m, dtype=float)
        u = np.interp(x, self._x, self.u_mol_per_m3, left=np.nan, right=0.0)
        u = np.where(x < 0, 0.0, u)
        return 1.0 + u / self.params.c0_mol_per_m3

    def diffusivity_m2_per_s(self) -> np.ndarray:
        """D_eff(u) at the unknown nodes (m^2/s)."""
        p = self.params
        if p.D_exponent_b == 0:
            return np.full(self._n, p.D0_m2_per_s)
        return p.D0_m2_per_s * np.exp(p.D_exponent_b * np.minimum(self._u / self._u_max, 50.0 / p.D_exponent_b))

    # ------------------------------------------------------------------ stepping
    def _prepare(self, dt_s: float) -> tuple[np.ndarray, np.ndarray]:
        """u_hom (zero flux) and w = du_new/dJ for one step of dt_s from the present state."""
        if self._pending is not None and self._pending[0] == dt_s:
            return self._pending[1], self._pending[2]
        p = self.params
        th = p.implicitness
        n = self._n
        if p.D_exponent_b == 0:
            key = (dt_s,)
        else:
            key = None
        if key is None or key != self._cache_key:
            d_node = self.diffusivity_m2_per_s()
            d_face = np.empty(len(self._h))
            d_face[: n - 1] = 0.5 * (d_node[:-1] + d_node[1:])  # arithmetic mean at inner faces
            if p.far_boundary == "fixed":
                d_face[n - 1] = d_node[n - 1]  # face to the fixed node uses the last unknown's D
            k = d_face / self._h  # face conductances (m/s)
            self._k = k
            diag = self._vol.copy()
            diag += th * dt_s * k[:n] if p.far_boundary == "fixed" else np.r_[th * dt_s * k, 0.0]
            diag[1:] += th * dt_s * k[: n - 1]
            off = -th * dt_s * k[: n - 1]
            dd, ee, info = lapack.dpttrf(diag, off)
            if info != 0:
                raise FloatingPointError(f"transport matrix not positive definite (info={info})")
            self._factors = (dd, ee)
            self._cache_key = key
            unit = np.zeros(n)
            unit[0] = dt_s
            self._w, info = lapack.dpttrs(dd, ee, unit)
        k = self._k
        u = self._u
        # rhs = (V + (1-th) dt K) u
        rhs = self._vol * u
        if th < 1.0:
            flux = k[: n - 1] * (u[:-1] - u[1:])  # face fluxes between unknowns (mol/m^2/s)
            a = (1.0 - th) * dt_s
            rhs[:-1] -= a * flux
            rhs[1:] += a * flux
            if p.far_boundary == "fixed":
                rhs[-1] -= a * k[n - 1] * u[-1]
        assert self._factors is not None
        u_hom, info = lapack.dpttrs(self._factors[0], self._factors[1], rhs)
        self._pending = (dt_s, u_hom, self._w)
        return u_hom, self._w

    def surface_response(self, dt_s: float) -> tuple[float, float]:
        """(u0 after dt_s with zero flux, du0/dJ) in mol/m^3 and mol/m^3 per mol m^-2 s^-1.

        u(0) after the step is exactly ``u0_hom + J * du0_dJ`` (the step is linear in J), which
        lets the cell solve its kinetics implicitly with the surface concentration.
        """
        u_hom, w = self._prepare(dt_s)
        return float(u_hom[0]), float(w[0])

    def step(self, flux_mol_per_m2_s: float, dt_s: float) -> float:
        """Advance dt_s with a constant boundary flux J (mol m^-2 s^-1, > 0 inserts Li).

        Returns the flux actually delivered: equal to J unless extraction (J < 0) would push
        u(0) below zero, in which case it is capped and the shortfall booked in
        ``deficit_mol_per_m2``.
        """
        if dt_s <= 0:
            raise ValueError("dt_s must be > 0")
        u_hom, w = self._prepare(dt_s)
        self._pending = None
        j = float(flux_mol_per_m2_s)
        if j < 0 and u_hom[0] + j * w[0] < 0:
            j_cap = -max(u_hom[0], 0.0) / w[0]
            self.deficit_mol_per_m2 += (j_cap - j) * dt_s
            j = j_cap
        u_new = u_hom + j * w
        p = self.params
        if p.far_boundary == "fixed":
            th = p.implicitness
            self.outflow_mol_per_m2 += dt_s * self._k[self._n - 1] * (th * u_new[-1] + (1 - th) * self._u[-1])
        if u_new.min() < 0:
            neg = np.minimum(u_new, 0.0)
            self.clipped_mol_per_m2 -= float(np.dot(self._vol, neg))
            u_new = np.maximum(u_new, 0.0)
        self._u = u_new
        self.inserted_mol_per_m2 += j * dt_s
        self.time_s += dt_s
        return j

    def relax(self, duration_s: float, dt_s: float = 100.0) -> None:
        """Let the field relax with zero flux for duration_s (open circuit, no current)."""
        t = 0.0
        while t < duration_s - 1e-12:
            h = min(dt_s, duration_s - t)
            self.step(0.0, h)
            t += h

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Plain-Python state (JSON/HDF5-attribute friendly) for checkpointing."""
        return {
            "params": self.params.model_dump(),
            "u_mol_per_m3": self.u_mol_per_m3.tolist(),
            "initial_mol_per_m2": self.initial_mol_per_m2,
            "inserted_mol_per_m2": self.inserted_mol_per_m2,
            "outflow_mol_per_m2": self.outflow_mol_per_m2,
            "deficit_mol_per_m2": self.deficit_mol_per_m2,
            "clipped_mol_per_m2": self.clipped_mol_per_m2,
            "time_s": self.time_s,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> "LiTransport":
        obj = cls(TransportParameters.model_validate(state["params"]))
        u = np.asarray(state["u_mol_per_m3"], dtype=float)
        if u.shape != obj._x.shape:
            raise ValueError("state does not match the grid of its parameters")
        obj._u = u[: obj._n].copy()
        for key in ("initial_mol_per_m2", "inserted_mol_per_m2", "outflow_mol_per_m2",
                    "deficit_mol_per_m2", "clipped_mol_per_m2", "time_s"):
            setattr(obj, key, float(state[key]))
        return obj

    # ------------------------------------------------------------------ the paper's end state
    @classmethod
    def paper_profile(
        cls,
        params: TransportParameters | None = None,
        peak_ratio: float = PAPER_PEAK_RATIO,
        width_m: float = PAPER_GAUSSIAN_WIDTH_M,
    ) -> "LiTransport":
        """The ex-situ post-cycling profile of [Y14] (physics.md §3.5): a Gaussian
        ``c/c0 = 1 + (peak_ratio - 1) exp(-(x / width)^2)`` with width = 2 sqrt(D t) = 251 nm,
        8.5 c0 at Pt; it crosses 6 c0 at 160 nm (§7 check 9) and holds 1670 nm x c0 of excess Li.
        """
        obj = cls(params)
        c0 = obj.params.c0_mol_per_m3
        obj.set_excess(paper_profile_excess(obj._x, peak_ratio, width_m) * c0)
        return obj


def paper_profile_excess(x_m: np.ndarray, peak_ratio: float = PAPER_PEAK_RATIO,
                         width_m: float = PAPER_GAUSSIAN_WIDTH_M) -> np.ndarray:
    """(c - c0)/c0 of the [Y14] Gaussian fit at x_m (physics.md §3.5): (peak-1) exp(-(x/width)^2)."""
    x = np.asarray(x_m, dtype=float)
    return (peak_ratio - 1.0) * np.exp(-((x / width_m) ** 2))


def crossing_m(transport: LiTransport, ratio: float) -> float:
    """First position (m) where c/c0 falls to `ratio` going away from Pt (linear interpolation);
    nan if the profile never reaches it."""
    r = transport.concentration_ratio(transport.x_m)
    below = np.nonzero(r < ratio)[0]
    if len(below) == 0 or below[0] == 0:
        return math.nan
    i = below[0]
    x0, x1 = transport._x[i - 1], transport._x[i]
    r0, r1 = r[i - 1], r[i]
    return float(x0 + (r0 - ratio) * (x1 - x0) / (r0 - r1))
