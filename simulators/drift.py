"""Specimen drift: where the specimen sits under the slit at any moment of the world's clock.

A biased specimen on a side-entry holder moves relative to the optical axis. Three parts, each
along the slit (y, across the battery layers) and across it (x), summed:

* **Thermal drift that settles.** Every disturbance (the run's start, a bias or temperature step
  the world is told about) adds a drift velocity that decays exponentially,
  ``v(t) = v_k exp(-(t - t_k)/tau)``, so its displacement is ``v_k tau (1 - exp(-(t - t_k)/tau))``;
  a residual constant velocity ``v_inf`` remains (stage creep).
* **A random walk**: independent Gaussian steps of variance ``D dt`` on a fixed time grid.
* **Jumps**: a Poisson process of sudden displacements (a holder cable relaxing, charging).

The random parts are drawn in blocks from their own generator, seeded from the world's seed, on a
fixed grid (`grid_s`), and the position at any time is interpolated on that grid, so the path does
not depend on when or how often it is asked (the runner's query pattern). The thermal part is
analytic, so a disturbance recorded later changes only the times after it.

Parameters are estimates ([est]) of the order of magnitude microscopists quote for side-entry
holders: a settled stage drifts well under a nanometre per minute (vendors specify ~0.5-1
nm/min for their stages), tens of nm per hour is ordinary for an in-situ biasing holder, and
more right after a bias or temperature change, settling over tens of minutes. docs/drift.md
lists them with the measured effect of each on a dry run. Defaults are zero drift: a world gets
drift only when a protocol or test asks for it.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

NM = 1e-9
MINUTE_S = 60.0


class DriftParameters(BaseModel):
    """Specimen drift along (y) and across (x) the slit. SI units; defaults: no drift."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    settling_velocity_m_per_s: tuple[float, float] = Field(
        default=(0.0, 0.0), description="(y, x) drift velocity right after a disturbance, m/s [est]"
    )
    settling_time_s: float = Field(default=15 * MINUTE_S, gt=0, le=7 * 86400, description="decay time of the thermal drift, s [est]")
    residual_velocity_m_per_s: tuple[float, float] = Field(
        default=(0.0, 0.0), description="(y, x) constant drift that never settles (stage creep), m/s [est]"
    )
    random_walk_m2_per_s: float = Field(default=0.0, ge=0, le=1e-15, description="random-walk diffusion D (variance D dt per step), m^2/s [est]")
    jump_rate_per_s: float = Field(default=0.0, ge=0, le=1.0, description="mean rate of sudden jumps, 1/s [est]")
    jump_rms_m: float = Field(default=0.0, ge=0, le=1e-5, description="rms size of a jump along each axis, m [est]")
    grid_s: float = Field(default=1.0, gt=0, le=3600, description="time grid of the random walk and jumps, s")

    @classmethod
    def typical_holder(cls, rate_nm_per_min: float = 1.0) -> "DriftParameters":
        """A biasing holder drifting `rate_nm_per_min` along the slit when settled, 3x that right
        after a disturbance (decaying over 15 min), a fifth of it across; a random walk of
        ~0.3 nm per minute rms and a 3 nm jump every two hours on average. All [est]."""
        v = rate_nm_per_min * NM / MINUTE_S
        return cls(
            settling_velocity_m_per_s=(2.0 * v, 0.4 * v),
            residual_velocity_m_per_s=(v, 0.2 * v),
            random_walk_m2_per_s=(0.3 * NM) ** 2 / MINUTE_S,
            jump_rate_per_s=1.0 / 7200.0,
            jump_rms_m=3.0 * NM,
        )

    @property
    def is_still(self) -> bool:
        return (
            not any(self.settling_velocity_m_per_s)
            and not any(self.residual_velocity_m_per_s)
            and self.random_walk_m2_per_s == 0.0
            and (self.jump_rate_per_s == 0.0 or self.jump_rms_m == 0.0)
        )


class SpecimenDrift:
    """The specimen's displacement (y, x) in metres at world-clock times, from `t_start_s` on."""

    _BLOCK = 4096

    def __init__(self, params: DriftParameters, seed: int, t_start_s: float = 0.0) -> None:
        self.params = params
        self.t_start_s = float(t_start_s)
        self._rng = np.random.default_rng([seed, 0x5D81F7])  # its own stream: the world's draws are unchanged
        self._disturbances: list[float] = [self.t_start_s]
        self._noise = np.zeros((1, 2))  # cumulative random walk + jumps at grid points 0, 1, 2, ...

    # -- disturbances -----------------------------------------------------------------------------
    def disturb(self, t_s: float) -> None:
        """A bias or temperature step at `t_s`: the thermal drift starts again from its full velocity."""
        if t_s > self._disturbances[-1]:
            self._disturbances.append(float(t_s))

    # -- position ---------------------------------------------------------------------------------
    def displacement_m(self, t_s: np.ndarray | float) -> np.ndarray:
        """Displacement (..., 2) = (y, x) in m at times `t_s` (zero at `t_start_s`)."""
        t = np.asarray(t_s, float)
        p = self.params
        if p.is_still:
            return np.zeros((*t.shape, 2))
        dt = np.maximum(t - self.t_start_s, 0.0)
        out = np.multiply.outer(dt, np.asarray(p.residual_velocity_m_per_s))
        v0 = np.asarray(p.settling_velocity_m_per_s)
        tau = p.settling_time_s
        for tk in self._disturbances:
            since = np.maximum(t - tk, 0.0)
            out += np.multiply.outer(tau * -np.expm1(-since / tau), v0)
        return out + self._random_part(dt)

    def mean_and_spread_m(self, t0_s: float, t1_s: float, samples: int = 16) -> tuple[np.ndarray, np.ndarray]:
        """Over [t0, t1]: the mean displacement (2,) and the offsets from it at `samples` evenly
        spaced moments (samples, 2) — an exposure sees the specimen smeared over these."""
        t = t0_s + (np.arange(samples) + 0.5) * (max(t1_s - t0_s, 0.0) / samples)
        d = self.displacement_m(t)
        mean = d.mean(axis=0)
        return mean, d - mean

    # -- internals --------------------------------------------------------------------------------
    def _random_part(self, dt: np.ndarray) -> np.ndarray:
        p = self.params
        if p.random_walk_m2_per_s == 0.0 and (p.jump_rate_per_s == 0.0 or p.jump_rms_m == 0.0):
            return np.zeros((*dt.shape, 2))
        k = dt / p.grid_s
        need = int(math.ceil(float(np.max(k, initial=0.0)))) + 1
        self._extend(need + 1)
        i = np.minimum(np.floor(k).astype(np.int64), self._noise.shape[0] - 2)
        f = (k - i)[..., None]
        return self._noise[i] * (1.0 - f) + self._noise[i + 1] * f

    def _extend(self, n_points: int) -> None:
        p = self.params
        while self._noise.shape[0] < n_points:
            steps = self._rng.normal(0.0, math.sqrt(p.random_walk_m2_per_s * p.grid_s), size=(self._BLOCK, 2))
            jumps = self._rng.random(self._BLOCK) < p.jump_rate_per_s * p.grid_s
            steps[jumps] += self._rng.normal(0.0, p.jump_rms_m, size=(int(jumps.sum()), 2))
            self._noise = np.concatenate([self._noise, self._noise[-1] + np.cumsum(steps, axis=0)])

    # -- checkpoints --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, object]:
        return {"t_start_s": self.t_start_s, "disturbances": list(self._disturbances)}

    def load_state(self, state: dict[str, object]) -> None:
        disturbances = state.get("disturbances")
        if isinstance(disturbances, list) and disturbances:
            self._disturbances = [float(t) for t in disturbances]
