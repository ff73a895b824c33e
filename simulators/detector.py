"""CCD detector model of the GIF camera (scintillator / fibre-optic CCD, UltraScan class).

Physics: reference/physics.md section 2 (signal chain 2.2, timing 2.3, references 2.4,
photon-transfer check 2.5) with the defaults of table 6.2. Rows of every array are position
along the slit (y), columns energy loss (x), as in `insitem.drivers.interfaces.CameraSettings`.

Signal chain per exposure (physics.md 2.2), all counts in ADU ("counts"):

    X[p]   = sum of G_k over the N_e[p] ~ Poisson(mu[p]) primary electrons landing in pixel p,
             G_k ~ Gamma(mean g, relative variance nu2)           (compound Poisson)
    S      = PSF (*) X                                            (scintillator light spread)
    raw[p] = bias[q] + gainmap[p] S[p] + D[p] + N(0, sigma_read[q]^2) + row_noise[q, row]
    raw    = clip(round(raw), 0, 65535)

How it is drawn fast (one 2048 x 2048 frame in well under 100 ms on a 2-core machine, see
docs/performance/detector.md), and what that simplifies:

* Mean and fluctuation are split: X = g mu + Z with E[Z] = 0, so S = g PSF(*)mu + PSF(*)Z.
  The mean g PSF(*)mu is deterministic: it is computed once per distinct expected image with
  the full PSF (Lorentzian tail out to `psf_radius_px`) and cached. SR-EELS images repeat each
  position row ~6 times (2048 rows / 330 positions, physics.md section 0); the convolution along
  x is done on the distinct rows only and the one along y is a small matrix product.
* Z is drawn per pixel: exactly (Poisson electron number, Gamma-distributed pulse-height sum)
  where mu < `exact_below_e`, and as a Gaussian with the exact compound-Poisson variance
  g^2 (1 + nu2) mu elsewhere. The Gaussian leaves out the skewness of the compound Poisson
  law; with the read noise included the skewness of a pixel value is below 0.15 at every dose
  for the defaults (see `DetectorParameters.exact_below_e`).
* The fluctuation Z is filtered with a short separable 5-tap kernel h instead of the full PSF.
  h is solved so that sum h = 1, sum h^2 = sum PSF^2 and the lag-1 autocorrelation equals the
  PSF's (per axis). Hence the per-pixel variance (photon-transfer slope g (1 + nu2) beta_psf),
  the nearest-neighbour correlation (physics.md 2.5, [S:SR25]) and the variance of sums over
  whole PSFs (slope g (1 + nu2)) are those of the full PSF. Simplification: correlations at
  lag >= 2 differ (lag 2: 0.33 instead of 0.11 for the defaults) and single-electron events at
  very low dose show the 5-tap footprint rather than the Lorentzian tail.
* The 2-D PSF is the product of two identical 1-D line profiles (Gaussian core + Lorentzian
  tail, each integrated over a pixel). Simplification: a radially symmetric Lorentzian tail is
  not separable; the product keeps the 1-D line-spread function in E and in y but is slightly
  more compact along the diagonals.
* Beyond the edges of the sensor (or of the given readout area) the expected image is taken as
  continuing with its edge values ('nearest'), so a flat field stays flat up to the edge.
* Dark signal D ~ Poisson(i_dark t) is drawn together with the read noise as one Gaussian of
  variance sigma_read^2 + i_dark t. Simplification: the Poisson skewness of the dark signal is
  dropped; for the defaults (read noise 25 count^2, dark 6 counts at 30 s) the skewness of the
  sum is 0.035.

Working set (docs/performance/dry-run.md): besides the gain map and the gain reference (the dark
map is kept as generator states and drawn again in row blocks when needed), an unbinned frame of
a new image holds two area-sized float32 arrays (the PSF mean and the padded fluctuation field)
and a binned one none: its PSF mean goes block by block into the cell sums of the readout
lattice. The exact draws, the noise filter, gain, mean and binning run in row blocks, the image
can be given and is cached as its distinct rows (`RowImage`), and an image seen once keeps no
area-sized array after its frame (an image that comes again is cached in full).

Binning is on-chip (CCD charge binning): signal and dark of the k unbinned pixels are summed
before the read-out amplifier, so read noise and row noise are added once per readout pixel
(physics.md 2.5); software binning would add k times the read-noise variance and is not
modelled here. Saturation is the 16-bit ADC limit of each readout pixel.

Binned readouts (`binned_fluctuation`, default on) draw the signal fluctuation on the lattice of
readout pixels instead of per unbinned pixel (by * bx times fewer deviates; a 330 x 1024 low-loss
sub-frame binned 6 x 1 costs a quarter, docs/performance/detector.md):

* Mean: exact, the cached g * gainmap * PSF(*)mu summed over each cell.
* Fluctuation: the cell sum of the compound-Poisson fluctuation Z has variance
  g^2 (1 + nu2) * (sum of mu over the cell); it is drawn per cell (exactly as Poisson electron
  number + Gamma pulse-height sum where the cell's expected electrons mu_cell are below
  `exact_below_e`; above, as a normal deviate with the first Cornish-Fisher term, which gives the
  cell the exact mean and variance and the compound-Poisson skewness, `skewed_normal_terms`,
  decision 0028), filtered with a separable
  5-tap lattice kernel per axis (`lattice_kernel`) and multiplied by the cell's mean gain.
  The lattice kernel is solved so that the readout pixel has the variance, the lag-1 correlation
  with its neighbouring readout pixels and the whole-sum variance (kernel sum 1) of the unbinned
  path (noise filtered with h, then summed over the cell; `binned_autocorrelation`). Its outer
  taps are slightly negative (-0.001 .. -0.004 of a centre tap near 0.7 .. 1).
  tests/simulators/test_detector_binned.py compares both paths per readout pixel.
* Simplifications: the variance is taken as uniform inside a cell and over the kernel's reach
  (where it changes from cell to cell the correlations are those of the average), lag >= 2
  correlations between readout pixels differ (both paths give 0.04 at most for binning >= 2), the gain
  map multiplies the fluctuation as its cell mean (relative variance error ~ 4e-4), and a single
  electron of an exactly drawn cell spreads with the lattice kernel, not from its own position in
  the cell. Falls back to the unbinned path where no lattice kernel exists (never for the
  defaults) and for binning 1 x 1.
* Like the unbinned path, the binned variance follows the 5-tap h, not the full PSF: for 6 x 1
  binning a readout pixel's signal variance is 0.83 g^2 (1 + nu2) mu_cell * R_x, the full PSF
  would give 0.73 (h's lag-2 correlation is too high, see above).
* Skewness: cells of >= `exact_below_e` expected electrons carry the compound-Poisson skewness
  1.633 / sqrt(mu_cell) (within 0.2 %); their excess kurtosis is ~3.57 / mu_cell instead of 3.33 / mu_cell.
  A readout pixel's counts (read noise, neighbours through the kernel) at mu_cell = 4 have the mean,
  variance and skewness of the exact draws within their sampling error
  (tests/simulators/test_detector_binned.py, decision 0028). The unbinned path leaves the
  skewness out above `exact_below_e` (see above), so the two paths differ in skewness there.

Random numbers: the two per-pixel Gaussian fields (signal fluctuation, read + dark noise) are
drawn by inverse-CDF sampling from a table of 2^16 equiprobable bins of the standard normal
(each bin's conditional mean, rescaled to unit variance), indexed by 16 raw bits of numpy's SFC64
generator. numpy's ziggurat `standard_normal` costs 34-70 ms per 4 Mpx float32 field on this
2-core machine, the table 10-12 ms (bench/bench_detector.py), and no numpy/scipy routine draws
normals faster, hence this small hand-written sampler. Its moments: mean 0, variance 1,
kurtosis 2.9998; simplification: it never goes beyond 4.39 sigma (a true Gaussian does with
probability 1.1e-5 per pixel); the signal field is then summed over the 25 taps of the PSF
kernel, which restores a Gaussian tail there. The fields are drawn in two fixed row chunks, each
with its own generator spawned from the `rng` given; with `n_threads=2` the chunks run in
parallel. A frame depends only on the seed, not on `n_threads`.
"""

from __future__ import annotations

import functools
import math
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy import fft as sfft
from scipy.optimize import fsolve
from scipy.special import erf, ndtr, ndtri

from insitem.simulators.blas import one_blas_thread

__all__ = [
    "DetectorParameters",
    "DetectorFrame",
    "CCDDetector",
    "RowImage",
    "psf_line_profile",
    "noise_kernel",
    "lattice_kernel",
    "binned_autocorrelation",
    "compound_poisson_skewness",
    "skewed_normal_terms",
]

_N_CHUNKS = 2  # fixed number of row chunks (one generator each): frames do not depend on n_threads
_PAD = 2  # half-width of the 5-tap noise kernel
_BLOCK_ROWS = 64  # rows per block of the per-frame loops (small temporaries instead of whole-frame ones)
_GAIN_REF_BAND_ROWS = 256  # the gain reference is exposed in bands of this many rows (readout areas)
_PSF_BLOCK_ROWS = 128  # output rows per banded product of the PSF's y convolution


class DetectorParameters(BaseModel):
    """Camera parameters, defaults from physics.md table 6.2 (per unbinned pixel).

    Units: counts = ADU of the 16-bit converter; e = primary (beam) electrons; px = unbinned pixel.
    """

    model_config = ConfigDict(extra="forbid")

    shape_px: tuple[int, int] = Field(default=(2048, 2048), description="(rows, columns) [Y14]")
    gain_counts_per_e: float = Field(default=6.3, gt=0, description="conversion gain g, counts per primary e [S:FACDOSE]")
    nu2: float = Field(default=0.5, ge=0, description="relative variance of the single-electron pulse height [est]")
    psf_sigma_px: float = Field(
        default=0.378,
        gt=0,
        description="Gaussian core sigma, px [est]: chosen so that g (1 + nu2) beta_psf = 1.55 counts, the sourced "
        "per-pixel variance-to-mean of the PSF-smoothed gain [S:SR25] (physics.md 2.1/2.2), with the sourced g, "
        "nu2 0.5 and the Lorentzian tail below",
    )
    psf_gamma_px: float = Field(default=2.0, gt=0, description="Lorentzian tail half-width gamma, px [est]")
    psf_tail_weight: float = Field(default=0.3, ge=0, le=1, description="weight of the Lorentzian tail [est]")
    psf_radius_px: int = Field(
        default=256, ge=2, description="PSF truncation radius, px; the Lorentzian mass beyond (0.15 % at 256) is renormalised away"
    )
    bias_counts: float = Field(default=252.0, description="mean bias (offset), counts [S:SR25]")
    bias_quadrant_spread_counts: float = Field(
        default=5.0, ge=0, description="bias of each quadrant drawn uniformly within +-this, counts [est]"
    )
    read_noise_counts: float = Field(default=5.0, ge=0, description="read noise rms per readout pixel, counts [est]")
    dark_counts_per_s: float = Field(default=0.2, ge=0, description="mean dark signal, counts/px/s at -20 C [est]")
    dark_spread: float = Field(default=0.3, ge=0, description="relative rms pixel-to-pixel dark spread (hot pixels) [est]")
    row_noise_counts: float = Field(default=1.0, ge=0, description="row noise rms per row per quadrant, counts [est]")
    gain_nonuniformity: float = Field(
        default=0.02, ge=0, lt=0.5, description="relative rms pixel-to-pixel gain variation of the gain map [est]"
    )
    gain_ref_residual: float = Field(default=0.0027, gt=0, description="relative gain-reference residual k_ref [S:SR25]")
    saturation_counts: int = Field(default=65535, gt=0, le=65535, description="16-bit ADC full scale [est]")
    clear_s: float = Field(default=0.25, ge=0, description="chip clearing before exposure, s (4-port) [S:SERIALEM]")
    frame_read_s: float = Field(default=0.3, gt=0, description="full unbinned frame read-out, s [est]")
    row_shift_s: float = Field(
        default=1e-6, ge=0, description="parallel shift of one row, s [est]; gives ~1 ms for a fully binned spectrum (physics.md 2.3)"
    )
    readout_ports: int = Field(default=4, ge=1, description="read-out amplifiers (quadrants) [S:SR25]")
    binned_fluctuation: bool = Field(
        default=True,
        description="with on-chip binning, draw the signal fluctuation on the binned lattice (module docstring); "
        "False: per unbinned pixel, then summed",
    )
    exact_below_e: float = Field(
        default=4.0,
        ge=0,
        description="expected electrons per readout pixel (per unbinned pixel without binning; per cell of the "
        "binned lattice) below which electrons are drawn exactly (Poisson + Gamma); above: Gaussian (unbinned "
        "path) or Gaussian with the compound-Poisson skewness (binned lattice, decision 0028). At 4 e the "
        "zero-electron probability is 1.8 %; above it an unbinned pixel's skewness with read noise is < 0.15",
    )

    @model_validator(mode="after")
    def _check(self) -> "DetectorParameters":
        rows, cols = self.shape_px
        if rows < 8 or cols < 8 or rows % 2 or cols % 2:
            raise ValueError(f"shape_px {self.shape_px}: need even sizes >= 8 (four quadrants)")
        if self.row_shift_s * rows / 2 >= self.frame_read_s:
            raise ValueError("row_shift_s * rows/2 must be shorter than frame_read_s")
        return self

    @property
    def pixel_read_s(self) -> float:
        """Digitisation time per pixel per port, s: frame_read_s minus the parallel shifts, shared by the ports."""
        rows, cols = self.shape_px
        return (self.frame_read_s - self.row_shift_s * rows / 2) / (rows * cols / self.readout_ports)


@dataclass(frozen=True)
class DetectorFrame:
    """One read-out exposure: raw uint16 counts (binned, readout area applied)."""

    data: np.ndarray
    saturated_px: int  # readout pixels at full scale (65535)
    readout_s: float  # read-out time, s
    exposure_s: float
    binning: tuple[int, int]
    readout_area: tuple[int, int, int, int]  # (top, left, bottom, right), unbinned, resolved


def psf_line_profile(sigma_px: float, gamma_px: float, tail_weight: float, radius_px: int) -> np.ndarray:
    """1-D line profile of the PSF on pixels -radius..radius, normalised to sum 1 (float64).

    (1 - w) * Gaussian(sigma) + w * Lorentzian(gamma), each integrated exactly over the pixel
    (erf and arctan differences), physics.md 2.2 / table 6.2. The mass beyond `radius_px` is
    renormalised onto the profile.
    """
    i = np.arange(-radius_px, radius_px + 1, dtype=np.float64)
    s2 = sigma_px * math.sqrt(2.0)
    gauss = 0.5 * (erf((i + 0.5) / s2) - erf((i - 0.5) / s2))
    lorentz = (np.arctan((i + 0.5) / gamma_px) - np.arctan((i - 0.5) / gamma_px)) / math.pi
    prof = (1.0 - tail_weight) * gauss + tail_weight * lorentz
    return prof / prof.sum()


def _autocorr(h: np.ndarray, lag: int) -> float:
    return float(np.dot(h[lag:], h[: h.size - lag]))


def _five_tap(beta: float, a1: float, guess: tuple[float, float]) -> tuple[np.ndarray, float]:
    """[c, a, 1 - 2a - 2c, a, c] with sum of squares `beta` and lag-1 autocorrelation `a1`; and the residual."""

    def eqs(v: np.ndarray) -> list[float]:
        a, c = v
        b = 1.0 - 2.0 * a - 2.0 * c
        return [b * b + 2 * a * a + 2 * c * c - beta, 2 * a * b + 2 * a * c - a1]

    with warnings.catch_warnings():  # fsolve warns when it cannot improve on a converged root
        warnings.simplefilter("ignore", RuntimeWarning)
        a, c = fsolve(eqs, list(guess), xtol=1e-14)
    return np.array([c, a, 1.0 - 2.0 * a - 2.0 * c, a, c]), float(np.max(np.abs(eqs(np.array([a, c])))))


def noise_kernel(profile: np.ndarray) -> np.ndarray:
    """Symmetric 5-tap kernel [c, a, b, a, c] with sum 1 and the profile's lag-0 and lag-1 autocorrelation.

    Solved with scipy.optimize.fsolve from the profile's own central taps. Filtering white noise
    with it (per axis) reproduces the per-pixel variance, the lag-1 correlation and the variance
    of whole-PSF sums of the PSF-filtered noise (see module docstring).
    """
    r = profile.size // 2
    h, res = _five_tap(_autocorr(profile, 0), _autocorr(profile, 1), (profile[r + 1], profile[r + 2]))
    if res > 1e-10 or np.any(h < 0):
        raise ValueError("PSF too wide or too narrow for the 5-tap noise kernel (no non-negative solution)")
    return h


def binned_autocorrelation(h: np.ndarray, factor: int, lag: int) -> float:
    """Correlation coefficient function of white noise filtered with `h` and summed over `factor` pixels.

    R(L) = (1/factor) sum_s A(s) A(s + L factor), A(s) the fraction of a source at offset s that
    lands in one readout pixel (h convolved with a box of `factor` pixels). R(0) is the variance
    of a readout pixel relative to that of the sum of its unfiltered pixels; sum over L of R = 1.
    """
    cover = np.convolve(np.ones(factor), h)
    shift = lag * factor
    if shift >= cover.size:
        return 0.0
    return float(np.dot(cover[shift:], cover[: cover.size - shift]) / factor)


def lattice_kernel(h: np.ndarray, factor: int) -> np.ndarray | None:
    """5-tap kernel on the lattice of readout pixels binned by `factor` along one axis.

    Filtering independent cell sums with it gives the readout pixels the variance (R(0)), the
    lag-1 correlation (R(1)) and the whole-sum variance (sum 1) of the unbinned path, i.e. of
    per-pixel noise filtered with `h` and then summed (`binned_autocorrelation`). The outer taps
    come out slightly negative for factor >= 2 (-0.001 .. -0.004 for the defaults). None if no
    solution with a dominant positive centre exists (the caller then draws per unbinned pixel).
    """
    if factor == 1:
        return h.copy()
    r0, r1 = binned_autocorrelation(h, factor, 0), binned_autocorrelation(h, factor, 1)
    k, res = _five_tap(r0, r1, (0.5 * r1, 0.0))
    if res > 1e-10 or k[2] <= 0 or np.any(k[1:4] < 0) or abs(k[0]) > 0.05 * k[2]:
        return None
    return k


def compound_poisson_skewness(mu_e: np.ndarray | float, nu2: float) -> np.ndarray | float:
    """Skewness of the compound-Poisson signal of `mu_e` expected electrons with Gamma pulse heights.

    Cumulants of a compound Poisson sum are kappa_n = mu E[G^n]; with G ~ Gamma(1/nu2, g nu2),
    E[G^2] = g^2 (1 + nu2) and E[G^3] = g^3 (1 + nu2)(1 + 2 nu2), so the skewness
    kappa_3 / kappa_2^(3/2) = (1 + 2 nu2) / sqrt((1 + nu2) mu) (1.633 / sqrt(mu) for nu2 = 0.5).
    """
    return (1.0 + 2.0 * nu2) / np.sqrt((1.0 + nu2) * np.asarray(mu_e, dtype=np.float64))


def skewed_normal_terms(
    mu_e: np.ndarray, scale: float, nu2: float, above_e: float,
    out: tuple[np.ndarray, np.ndarray] | None = None, work: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(s, c), float32, per cell of `mu_e` expected electrons: with z standard normal,
    y = s (z + c (z^2 - 1)) has mean 0, variance sigma^2 = scale^2 mu_e and the compound-Poisson
    skewness of mu_e electrons (`compound_poisson_skewness`) where mu_e >= above_e; elsewhere c = 0
    and s = sigma (a plain normal). `scale` is g sqrt(1 + nu2) for the detector's signal.

    y is the first Cornish-Fisher term; its variance is s^2 (1 + 2 c^2), so
    s = sigma / sqrt(1 + 2 c^2), and its skewness (6 c + 8 c^3) / (1 + 2 c^2)^(3/2) = 6 c - 10 c^3 + O(c^5)
    is inverted as c = gamma/6 + 10 gamma^3/1296 (skewness 0.16 % low at gamma = 0.816, 4 e for
    nu2 = 0.5; 0.04 % at 8 e). Its excess kurtosis (3 + 60 c^2 + 60 c^4) / (1 + 2 c^2)^2 - 3 is
    ~3.57/mu against the compound Poisson's 3.33/mu for nu2 = 0.5 (decision 0028). gamma is capped
    at 2 (c <= 0.40) so that any mu > 0 gives finite terms; mu = 0 gives s = 0.

    `out` (two float32 arrays of mu_e's shape) and `work` (one more, which may be `mu_e` itself:
    it is overwritten last) avoid new arrays: a dry run makes these terms for every frame, and
    fresh pages cost more than the arithmetic here.
    """
    mu = np.asarray(mu_e, dtype=np.float32)
    sd, c = out if out is not None else (np.empty(mu.shape, np.float32), np.empty(mu.shape, np.float32))
    a = float(compound_poisson_skewness(1.0, nu2))  # gamma = a / sqrt(mu)
    np.maximum(mu, np.float32(a * a / 4.0), out=c)  # gamma <= 2
    np.divide(np.float32(a * a), c, out=c)  # gamma^2
    if above_e > 0:
        np.copyto(c, np.float32(0.0), where=mu < np.float32(above_e))
    np.multiply(c, np.float32(10.0 / 1296.0), out=sd)  # c = gamma (1/6 + 10 gamma^2 / 1296)
    sd += np.float32(1.0 / 6.0)
    np.sqrt(c, out=c)
    c *= sd
    np.square(c, out=sd)  # s = scale sqrt(mu) / sqrt(1 + 2 c^2)
    sd *= np.float32(2.0)
    sd += np.float32(1.0)
    np.sqrt(sd, out=sd)
    w = work if work is not None else np.empty(mu.shape, np.float32)
    np.sqrt(mu, out=w)
    w *= np.float32(scale)
    np.divide(w, sd, out=sd)
    return sd, c


@functools.lru_cache(maxsize=1)
def _gauss_table() -> np.ndarray:
    """2^16 conditional means of the standard normal over equiprobable bins, unit variance, float32."""
    n = 1 << 16
    edges = ndtri(np.arange(n + 1) / n)
    pdf = np.exp(-0.5 * edges**2) / math.sqrt(2 * math.pi)
    pdf[[0, -1]] = 0.0
    t = (pdf[:-1] - pdf[1:]) * n  # E[x | bin] = (phi(lo) - phi(hi)) / P(bin)
    t /= math.sqrt(np.mean(t**2))
    assert abs(ndtr(edges[1]) - 1 / n) < 1e-12
    return t.astype(np.float32)


def _normals(gen: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal float32 deviates by table look-up with 16 random bits each (see module docstring)."""
    size = math.prod(shape)
    bits = gen.bit_generator.random_raw((size + 3) // 4).view(np.uint16)[:size]
    return _gauss_table()[bits].reshape(shape)


def _scaled_normals(gen: np.random.Generator, scale: Callable[[int, int], np.ndarray], out: np.ndarray) -> None:
    """out[i] = normal * scale(i0, i1)[i - i0], drawn in blocks of `_BLOCK_ROWS` rows.

    Each block but the last takes a multiple of 4 deviates (one raw 64-bit word gives four), so
    the deviates are the same as those of one `_normals(gen, out.shape)` call.
    """
    n = out.shape[0]
    for i0 in range(0, n, _BLOCK_ROWS):
        i1 = min(i0 + _BLOCK_ROWS, n)
        np.multiply(_normals(gen, (i1 - i0,) + out.shape[1:]), scale(i0, i1), out=out[i0:i1])


def _fft_convolve_valid(x: np.ndarray, kernel: np.ndarray, axis: int) -> np.ndarray:
    """'valid' linear convolution of `x` with the 1-D `kernel` along `axis`, by real FFT.

    The same transform lengths and operations as scipy.signal.fftconvolve(mode="valid"), in
    the precision of the inputs (float32 in, float32 out); scipy.fft is used directly because
    importing scipy.signal costs the dry run about 23 MB of resident memory.
    """
    n1, n2 = x.shape[axis], kernel.size
    n = sfft.next_fast_len(n1 + n2 - 1, True)
    kshape = [1] * x.ndim
    kshape[axis] = n2
    spec = sfft.rfft(x, n, axis=axis)
    spec *= sfft.rfft(kernel.reshape(kshape), n, axis=axis)
    full = sfft.irfft(spec, n, axis=axis)
    index = [slice(None)] * x.ndim
    index[axis] = slice(n2 - 1, n1)
    return full[tuple(index)].copy()


def _row_runs(mu: np.ndarray) -> np.ndarray:
    """True for every row that differs from the row before (and for row 0): the starts of runs of equal rows."""
    new_run = np.empty(mu.shape[0], dtype=bool)
    new_run[0] = True
    np.any(mu[1:] != mu[:-1], axis=1, out=new_run[1:])
    return new_run


@dataclass(frozen=True)
class RowImage:
    """An expected image given by its rows: `repeats[j]` CCD rows in a row equal to `rows[j]`.

    The image is `np.repeat(rows, repeats, axis=0)` (`to_array`); `CCDDetector.expose` takes
    it in place of that array (same frames) without the array ever being made. A simulated
    SR-EELS image repeats each position's spectrum over the CCD rows of its bin (6 for the
    protocols), so this is a sixth of the image (16 MB for the 1980-row readout area).
    """

    rows: np.ndarray  # (k, columns) expected electrons per pixel
    repeats: np.ndarray  # (k,) integers >= 0

    @property
    def shape(self) -> tuple[int, int]:
        return (int(np.sum(self.repeats)), int(self.rows.shape[1]))

    def to_array(self) -> np.ndarray:
        """The image as a float32 array."""
        return np.repeat(np.asarray(self.rows, dtype=np.float32), self.repeats, axis=0)


def _runs(expected_e: np.ndarray | RowImage) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """(distinct rows u, run starts new_run, image shape): row i of the float32 image is
    u[cumsum(new_run)[i] - 1], and consecutive rows of u differ (see `_row_runs`)."""
    if isinstance(expected_e, RowImage):
        rows = np.asarray(expected_e.rows, dtype=np.float32)
        repeats = np.asarray(expected_e.repeats, dtype=np.intp)
        if rows.ndim != 2 or repeats.shape != (rows.shape[0],) or np.any(repeats < 0) or not repeats.sum():
            raise ValueError("RowImage: rows must be 2-D with one repeat count >= 0 per row, and some rows")
        keep = repeats > 0
        rows, repeats = rows[keep], repeats[keep]
        differs = _row_runs(rows)  # a row equal to the one before continues its run
        new_run = np.zeros(int(repeats.sum()), dtype=bool)
        new_run[(np.cumsum(repeats) - repeats)[differs]] = True
        return rows[differs], new_run, (new_run.size, rows.shape[1])
    mu = np.asarray(expected_e, dtype=np.float32)
    if mu.ndim != 2:
        raise ValueError(f"expected_e must be 2-D, got shape {mu.shape}")
    new_run = _row_runs(mu)
    return mu[new_run], new_run, mu.shape


def _tail_sums(profile: np.ndarray) -> np.ndarray:
    """tail[k] = sum of profile[k:] for k = 0 .. profile.size (tail[-1] = 0 exactly), float64."""
    return np.concatenate([np.cumsum(profile[::-1])[::-1], [0.0]])


def _nearest_conv_weights(tail: np.ndarray, n: int, starts: np.ndarray, ends: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """W[j, i] = sum over s in [starts[j], ends[j]) of K[rows[i], s], K the (n x n) 'nearest' convolution matrix.

    (K v)[i] = sum_s P(i - s) v_ext[s] with v extended beyond 0 .. n-1 by its edge values, so the
    mass from s < 0 folds onto column 0 and from s > n-1 onto column n-1. Then the sum of the
    first j columns of row i is a tail sum of the profile: sum over lag >= i - j + 1 of P(lag)
    for 1 <= j <= n-1, 0 for j = 0 and the whole profile for j = n; no n x n matrix is built.
    """
    r = (tail.size - 2) // 2

    def first_columns(j: np.ndarray) -> np.ndarray:
        k = np.clip(rows[None, :] - j[:, None] + 1 + r, 0, 2 * r + 1)
        k[j == 0] = 2 * r + 1
        k[j == n] = 0
        return tail[k]

    return first_columns(ends) - first_columns(starts)


def _dark_block(gen: np.random.Generator, p: DetectorParameters, n_rows: int) -> np.ndarray:
    """`n_rows` rows of the dark map (counts/s per pixel, float32) drawn from `gen`.

    Hot-pixel spread: log-normal with mean 1 and relative rms dark_spread (positive,
    right-skewed) [est], times the mean dark rate; drawn in float64 and stored as float32
    (relative precision 6e-8, far below the 30 % spread it models).
    """
    s_ln = math.sqrt(math.log1p(p.dark_spread**2))
    block = gen.normal(-0.5 * s_ln**2, s_ln, (n_rows, p.shape_px[1]))
    np.exp(block, out=block)
    block *= p.dark_counts_per_s
    return block.astype(np.float32)


@dataclass
class _Lattice:
    """An expected image's signal on the lattice of binned readout pixels (see module docstring)."""

    mean: np.ndarray  # g * sum over the cell of gainmap * PSF(*)mu, (ny, nx) float32 counts (exact)
    sigma: np.ndarray  # s of each cell's fluctuation s (z + c (z^2 - 1)), (ny + 2 _PAD, nx + 2 _PAD) float32, edges repeated
    skew_c: np.ndarray  # c of the same (`skewed_normal_terms`; 0: a plain normal), shape of sigma
    gain: np.ndarray  # mean gain map over each cell, (ny, nx) float32
    mu: np.ndarray  # expected electrons of each cell (sum over the cell), (ny, nx) float32
    exact: np.ndarray  # cells drawn exactly (0 < mu < exact_below_e per readout pixel), (ny, nx) bool
    n_exact: int


class _SignalCache:
    """Everything derived from one expected image (deterministic parts of the signal).

    The image itself is kept as its distinct rows: SR-EELS images repeat each position row
    over several CCD rows, so this is a sixth of the image (physics.md section 0).
    """

    def __init__(self, rows: np.ndarray, new_run: np.ndarray, shape: tuple[int, int], area: tuple[int, int, int, int]) -> None:
        self.shape = shape
        self.new_run = new_run  # row starts a run of equal rows (see _row_runs)
        self.rows = rows  # the distinct rows of the expected image (float32, this cache's own copy)
        self.area = area
        self.has_signal = False  # any expected electrons at all
        self.repeated = False  # the image came again after it was cached
        self.mean: np.ndarray | None = None  # g * gainmap * PSF(*)mu over the area, float32 (None: not made or released)
        self.area_rows: np.ndarray | None = None  # distinct rows of the image over the area, float32
        self.row_index: np.ndarray | None = None  # area row -> row of area_rows
        self.sigma_rows: np.ndarray | None = None  # Gaussian std of Z per row of area_rows, columns padded by _PAD, float32
        self.sigma_index: np.ndarray | None = None  # padded row -> row of sigma_rows
        self.exact_below_e = 0.0
        self.n_low = 0  # pixels drawn exactly (0 < mu < exact_below_e)
        self.lattices: dict[tuple[int, int], _Lattice] = {}  # per binning: the fluctuation drawn on readout pixels

    def low_pixels(self, i0: int, i1: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact-draw pixels of area rows i0..i1 in row-major order: flat indices into the
        padded fluctuation array, and their expected electrons (float64)."""
        assert self.area_rows is not None and self.row_index is not None
        mu = self.area_rows[self.row_index[i0:i1]]
        w = mu.shape[1]
        flat = np.flatnonzero((mu < self.exact_below_e) & (mu > 0))
        ii = flat // w
        pidx = flat + (2 * _PAD) * ii + (i0 + _PAD) * (w + 2 * _PAD) + _PAD
        return pidx, mu.reshape(-1)[flat].astype(np.float64)

    def matches(self, rows: np.ndarray, new_run: np.ndarray, shape: tuple[int, int], area: tuple[int, int, int, int]) -> bool:
        """True if the image with distinct rows `rows` and run starts `new_run` (`_runs`) equals the cached one, over the same area."""
        # same run pattern and same distinct rows: every row equals the cached one
        return (
            self.area == area
            and self.shape == shape
            and np.array_equal(self.new_run, new_run)
            and np.array_equal(self.rows, rows)
        )


class CCDDetector:
    """Simulated GIF CCD: `expose` turns an expected electron image into raw uint16 counts.

    `rng` seeds everything: the fixed per-camera maps (quadrant bias, dark map with hot pixels,
    gain map) are drawn from it at construction (the dark map is kept as generator states and
    drawn again block by block when needed), and the per-frame generators are spawned from it. `n_threads` (1 or 2) only sets parallelism, never the numbers drawn; the default 1
    is faster on a loaded 2-core machine (docs/performance/detector.md).
    """

    def __init__(
        self,
        params: DetectorParameters | None = None,
        rng: np.random.Generator | int | None = None,
        n_threads: int = 1,
    ) -> None:
        self.params = p = params or DetectorParameters()
        self._rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        rows, cols = p.shape_px
        r = self._rng
        self.bias_quadrant_counts = (
            p.bias_counts + r.uniform(-p.bias_quadrant_spread_counts, p.bias_quadrant_spread_counts, 4)
        ).astype(np.float64)  # quadrants: 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right
        # The dark map is drawn in row blocks (the same deviates as one whole-map draw) but not
        # kept (16 MB for the default sensor): only the generator state at the start of each
        # block is, and `_dark_rows` draws a block again when the read-out maps of a new
        # exposure time, area or binning need it (`dark_map_counts_per_s` makes the whole map).
        self._dark_states: list[dict] = []
        for i0 in range(0, rows, _BLOCK_ROWS):
            self._dark_states.append(r.bit_generator.state)
            _dark_block(r, p, min(i0 + _BLOCK_ROWS, rows) - i0)
        self._dark_memo: tuple[int, np.ndarray] | None = None  # the block drawn last
        gm = r.standard_normal((rows, cols))
        gm *= p.gain_nonuniformity
        gm += 1.0
        gm /= gm.mean()
        self.gain_map = gm.astype(np.float32)  # float32: relative precision 6e-8, far below its 2 % spread
        del gm
        seeds = r.integers(0, 2**63, size=_N_CHUNKS + 1)
        self._chunk_gens = [np.random.Generator(np.random.SFC64(int(s))) for s in seeds[:_N_CHUNKS]]
        self._gen = np.random.Generator(np.random.SFC64(int(seeds[-1])))  # exact draws, row noise

        self.psf_profile = psf_line_profile(p.psf_sigma_px, p.psf_gamma_px, p.psf_tail_weight, p.psf_radius_px)
        self.noise_kernel_1d = noise_kernel(self.psf_profile)
        self._h = [np.float32(v) for v in self.noise_kernel_1d[2:]]  # b, a, c
        self._lattice_kernels: dict[int, np.ndarray | None] = {}
        self._lattice_gain: dict[tuple, np.ndarray] = {}
        # `correct`: the full-sensor gain reference cut to the last area and averaged over its bins,
        # with that (area, binning) and the reference it was made from
        self._binned_gain_ref: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

        self._n_threads = max(1, min(int(n_threads), _N_CHUNKS))
        self._pool = ThreadPoolExecutor(self._n_threads) if self._n_threads > 1 else None
        self._cache: _SignalCache | None = None
        self._psf_tail = _tail_sums(self.psf_profile)
        self._band_weights: dict = {}  # `_banded_products` weights per run layout
        self._row_kernel_spectra: dict[int, np.ndarray] = {}  # PSF line profile spectrum per transform length
        self._readout: dict[tuple, tuple[np.ndarray, np.ndarray, int]] = {}
        self._bufs: dict[str, np.ndarray] = {}
        # lattice-sized arrays (a sixth of the area or less) kept from frame to frame: scratch
        # buffers, and the per-image arrays of lattices whose image will not come again
        self._lattice_bufs: dict[str, np.ndarray] = {}
        self._lattice_pool: dict[tuple[str, str], np.ndarray] = {}
        self._gain_ref: np.ndarray | None = None

    # ---------------------------------------------------------------- dark map

    @property
    def dark_map_counts_per_s(self) -> np.ndarray:
        """Mean dark signal per pixel, counts/s, float32 over the sensor (a new array, drawn again on each access)."""
        return np.concatenate([self._dark_map_block(k) for k in range(len(self._dark_states))])

    def _dark_map_block(self, k: int) -> np.ndarray:
        """Rows k * _BLOCK_ROWS .. of the dark map, drawn again from the generator state stored for them."""
        if self._dark_memo is not None and self._dark_memo[0] == k:
            return self._dark_memo[1]
        rows = self.params.shape_px[0]
        gen = np.random.Generator(type(self._rng.bit_generator)())
        gen.bit_generator.state = self._dark_states[k]
        block = _dark_block(gen, self.params, min((k + 1) * _BLOCK_ROWS, rows) - k * _BLOCK_ROWS)
        self._dark_memo = (k, block)
        return block

    def _dark_rows(self, r0: int, r1: int) -> np.ndarray:
        """Dark map rows r0..r1 (all columns), counts/s, float32."""
        k0, k1 = r0 // _BLOCK_ROWS, (r1 - 1) // _BLOCK_ROWS
        parts = [self._dark_map_block(k) for k in range(k0, k1 + 1)]
        rows = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return rows[r0 - k0 * _BLOCK_ROWS : r1 - k0 * _BLOCK_ROWS]

    # ---------------------------------------------------------------- derived constants

    @property
    def beta_psf(self) -> float:
        """sum over the 2-D PSF of PSF^2 (physics.md 2.2): the product of the 1-D sums."""
        return _autocorr(self.psf_profile, 0) ** 2

    @property
    def psf_lag1_correlation(self) -> float:
        """Correlation of neighbouring pixels (along x or y) of PSF-filtered white noise [S:SR25]."""
        return _autocorr(self.psf_profile, 1) / _autocorr(self.psf_profile, 0)

    @property
    def photon_transfer_gain(self) -> float:
        """EMVA 1288 slope K_eff = g (1 + nu2) beta_psf per unbinned pixel, counts (physics.md 2.5).

        The default PSF core (sigma 0.378 px, beta_psf = 0.164) is chosen so that this is 1.55
        counts, the variance-to-mean measured on the camera of [S:SR25] (physics.md 2.1/2.2);
        table 6.2's [est] sigma 0.6 px would give 0.739 counts.
        """
        p = self.params
        return p.gain_counts_per_e * (1.0 + p.nu2) * self.beta_psf

    def dark_variance_counts2(self, exposure_s: float) -> float:
        """Temporal variance of an unbinned dark pixel: read^2 + mean dark + row^2 + 1/12 (quantisation), counts^2."""
        p = self.params
        return p.read_noise_counts**2 + p.dark_counts_per_s * exposure_s + p.row_noise_counts**2 + 1.0 / 12.0

    def readout_time_s(self, binning: tuple[int, int] = (1, 1), readout_area: tuple[int, int, int, int] | None = None) -> float:
        """Read-out time, s (physics.md 2.3).

        Model [est]: every read-out shifts all rows of a quadrant in parallel (rows/2 shifts of
        `row_shift_s`, on-chip binning included) and digitises the readout pixels on
        `readout_ports` amplifiers at `pixel_read_s` each. Full frame: 0.3 s; a spectrum binned
        to one row: ~1.2 ms. Simplification: skipped columns and rows outside the area cost nothing.
        """
        p = self.params
        ny, nx = self._frame_shape(self._area(readout_area), binning)
        return p.row_shift_s * p.shape_px[0] / 2 + ny * nx / p.readout_ports * p.pixel_read_s

    # ---------------------------------------------------------------- public API

    def expose(
        self,
        expected_e: np.ndarray | RowImage | None,
        exposure_s: float,
        binning: tuple[int, int] = (1, 1),
        readout_area: tuple[int, int, int, int] | None = None,
        beam_on: bool = True,
    ) -> DetectorFrame:
        """Expose and read out one frame.

        `expected_e`: expected primary electrons per unbinned pixel over the exposure (float
        array over the full sensor or over the readout area, or a `RowImage` of that shape;
        rows = position, columns = energy). With `beam_on` False, or an all-zero / None image, the frame is a dark frame
        (bias + dark + noise). `exposure_s` sets the dark signal. Returns raw uint16 counts.
        """
        if exposure_s < 0:
            raise ValueError(f"exposure_s must be >= 0, got {exposure_s}")
        area = self._area(readout_area)
        by, bx = self._check_binning(binning)
        ny, nx = self._frame_shape(area, (by, bx))
        signal = None
        if beam_on and expected_e is not None:
            cache = self._signal(expected_e, area)
            if cache.has_signal:
                signal = self._draw_signal(cache, (by, bx))
                if not cache.repeated:
                    # an image seen once (every frame of a run whose sample evolves): its
                    # area-sized arrays (PSF mean of the unbinned path, fluctuation buffer, 32 MB
                    # for the full sensor) are not kept between frames; they are rebuilt if it
                    # comes again. Its lattice arrays go to the pool for the next image's lattice
                    # (fresh pages cost a dry run more than the arithmetic on them).
                    cache.mean = None
                    self._recycle(cache)
                    self._bufs.clear()
        data, n_sat = self._read_out(signal, exposure_s, area, (by, bx))
        return DetectorFrame(
            data=data,
            saturated_px=n_sat,
            readout_s=self.readout_time_s((by, bx), area),
            exposure_s=float(exposure_s),
            binning=(by, bx),
            readout_area=area,
        )

    def mean_counts(
        self,
        expected_e: np.ndarray | RowImage | None,
        exposure_s: float,
        binning: tuple[int, int] = (1, 1),
        readout_area: tuple[int, int, int, int] | None = None,
        beam_on: bool = True,
    ) -> np.ndarray:
        """Noise-free expectation of `expose` (before rounding and saturation), float64 counts."""
        area = self._area(readout_area)
        by, bx = self._check_binning(binning)
        ny, nx = self._frame_shape(area, (by, bx))
        top, left, bottom, right = area
        dark = self._dark_rows(top, bottom)[:, left:right].astype(np.float64) * exposure_s
        total = dark
        if beam_on and expected_e is not None:
            cache = self._signal(expected_e, area)
            if cache.has_signal:
                total = total + self._mean(cache)
        total = total[: ny * by, : nx * bx].reshape(ny, by, nx, bx).sum(axis=(1, 3))
        return total + self._bias_map(area, (by, bx))

    def dark_reference(
        self,
        exposure_s: float,
        n_frames: int = 10,
        binning: tuple[int, int] = (1, 1),
        area: tuple[int, int, int, int] | None = None,
    ) -> np.ndarray:
        """Mean of `n_frames` beam-blanked frames at `exposure_s` (physics.md 2.4), float32.

        Its noise falls as sqrt(dark variance / n_frames).
        """
        if n_frames < 1:
            raise ValueError("n_frames must be >= 1")
        acc = None
        for _ in range(n_frames):
            f = self.expose(None, exposure_s, binning, area, beam_on=False).data
            if acc is None:
                acc = f.astype(np.float64)
            else:
                acc += f
        assert acc is not None
        acc /= n_frames
        return acc.astype(np.float32)

    def gain_reference(self, refresh: bool = False) -> np.ndarray:
        """Gain reference as DigitalMicrograph-style software makes it (physics.md 2.4), float32, unbinned.

        (mean of flat-field frames - dark reference), normalised to mean 1. The flat dose and
        the number of flats are chosen so that the shot-noise error of the reference equals the
        sourced residual k_ref = 0.27 % [S:SR25]: n frames of c counts with
        k_ref^2 = (K_eff c + s_d^2)/(n c^2) + s_d^2/(10 c^2), s_d^2 the dark variance, c below 60 %
        of full scale. Made once and kept; `refresh=True` makes a new one.

        The flats and darks are read out in bands of `_GAIN_REF_BAND_ROWS` rows (each band its
        own readout area), so no full-sensor working set is needed: a flat stays flat with the
        'nearest' edge extension, and per pixel the noise is the same as in full frames. Only
        the correlation of the signal noise between the two rows at a band edge is lost (the
        5-tap kernel does not reach across), which the reference's 0.27 % residual does not see.
        The mean of the n flats and that of the darks are each drawn as one frame with the law
        of the mean (`_mean_of_frames`; the flats stay below full scale).
        """
        if self._gain_ref is not None and not refresh:
            return self._gain_ref
        p = self.params
        t = 1.0
        k2 = p.gain_ref_residual**2
        var_d = self.dark_variance_counts2(t)
        n_dark = 10
        full = p.saturation_counts - p.bias_counts - p.bias_quadrant_spread_counts
        for n in range(1, 1000):
            a, b = self.photon_transfer_gain / n, var_d / n + var_d / n_dark
            c = (a + math.sqrt(a * a + 4 * k2 * b)) / (2 * k2)
            if c <= 0.6 * full:
                break
        rows, cols = p.shape_px
        # (mean flat - dark) is stored as float32 before the normalisation: relative rounding
        # 6e-8, far below the 2.7e-3 residual of the reference itself
        ref = np.empty((rows, cols), dtype=np.float32)
        total = 0.0
        for top in range(0, rows, _GAIN_REF_BAND_ROWS):
            area = (top, 0, min(top + _GAIN_REF_BAND_ROWS, rows), cols)
            flats = np.broadcast_to(np.float32(n * c / p.gain_counts_per_e), (area[2] - top, cols))  # all n flats
            acc = self._mean_of_frames(flats, t, n, area)
            acc -= self._mean_of_frames(None, t, n_dark, area)
            total += float(acc.sum())
            ref[top : area[2]] = acc
            self._readout.pop((t, area, (1, 1)), None)  # read-out maps of this band are not needed again
        self._cache = None  # nor the flat's signal cache and fluctuation buffer
        self._bufs.clear()
        ref /= total / ref.size
        self._gain_ref = ref
        return ref

    def correct(
        self,
        raw: np.ndarray,
        dark_ref: np.ndarray,
        gain_ref: np.ndarray,
        binning: tuple[int, int] = (1, 1),
        readout_area: tuple[int, int, int, int] | None = None,
    ) -> np.ndarray:
        """gain_normalized processing: (raw - dark_ref) / gain_ref, float32 (physics.md 2.4).

        `gain_ref` may be the unbinned full-sensor reference: it is then cut to the readout area
        and averaged over each on-chip bin (the binned pixel sums gain_i * S_i); that binned
        reference is kept for the next frame of the same area and binning while the same array
        is given (a reference must therefore not be changed in place; `gain_reference(refresh=True)`
        makes a new array).
        """
        if gain_ref.shape != raw.shape:
            area = self._area(readout_area)
            by, bx = self._check_binning(binning)
            ny, nx = self._frame_shape(area, (by, bx))
            if (ny, nx) != raw.shape or gain_ref.shape != self.params.shape_px:
                raise ValueError(f"gain_ref {gain_ref.shape} does not fit raw {raw.shape}")
            key = (area, (by, bx))
            made = self._binned_gain_ref.get(key)
            if made is not None and made[0] is gain_ref:
                gain_ref = made[1]
            else:
                top, left, _, _ = area
                g = gain_ref[top : top + ny * by, left : left + nx * bx]
                binned = g.reshape(ny, by, nx, bx).mean(axis=(1, 3), dtype=np.float64).astype(np.float32)
                self._binned_gain_ref.clear()  # one kept (a window's frames come in runs): 1.4-2.7 MB
                self._binned_gain_ref[key] = (gain_ref, binned)
                gain_ref = binned
        out = raw.astype(np.float32)
        out -= dark_ref
        out /= gain_ref
        return out

    def close(self) -> None:
        """Stop the worker threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    # ---------------------------------------------------------------- geometry helpers

    def _area(self, readout_area: tuple[int, int, int, int] | None) -> tuple[int, int, int, int]:
        rows, cols = self.params.shape_px
        if readout_area is None:
            return (0, 0, rows, cols)
        top, left, bottom, right = (int(v) for v in readout_area)
        if not (0 <= top < bottom <= rows and 0 <= left < right <= cols):
            raise ValueError(f"readout_area {readout_area} outside the {rows}x{cols} sensor")
        return (top, left, bottom, right)

    @staticmethod
    def _check_binning(binning: tuple[int, int]) -> tuple[int, int]:
        by, bx = (int(v) for v in binning)
        if by < 1 or bx < 1:
            raise ValueError(f"binning must be >= 1, got {binning}")
        return by, bx

    @staticmethod
    def _frame_shape(area: tuple[int, int, int, int], binning: tuple[int, int]) -> tuple[int, int]:
        top, left, bottom, right = area
        ny, nx = (bottom - top) // binning[0], (right - left) // binning[1]
        if ny < 1 or nx < 1:
            raise ValueError(f"binning {binning} larger than the readout area {area}")
        return ny, nx

    def _quadrant_split(self, area: tuple[int, int, int, int], binning: tuple[int, int]) -> tuple[np.ndarray, int]:
        """Per readout row: 0 (top quadrants) or 1 (bottom); and the first readout column in the right quadrants."""
        rows, cols = self.params.shape_px
        top, left, _, _ = area
        ny, nx = self._frame_shape(area, binning)
        row_half = ((top + np.arange(ny) * binning[0]) >= rows // 2).astype(np.intp)
        col_split = int(np.searchsorted(left + np.arange(nx) * binning[1], cols // 2))
        return row_half, col_split

    def _bias_map(self, area: tuple[int, int, int, int], binning: tuple[int, int], i0: int = 0, i1: int | None = None) -> np.ndarray:
        """Quadrant bias of readout rows i0..i1 (all by default), float64 counts."""
        ny, nx = self._frame_shape(area, binning)
        row_half, split = self._quadrant_split(area, binning)
        row_half = row_half[i0:i1]
        b = np.empty((row_half.size, nx))
        q = self.bias_quadrant_counts
        b[:, :split] = q[2 * row_half][:, None]
        b[:, split:] = q[2 * row_half + 1][:, None]
        return b

    # ---------------------------------------------------------------- deterministic signal

    def _signal(self, expected_e: np.ndarray | RowImage, area: tuple[int, int, int, int]) -> _SignalCache:
        u, new_run, shape = _runs(expected_e)
        c = self._cache
        if c is not None and c.matches(u, new_run, shape, area):
            c.repeated = True
            return c
        top, left, bottom, right = area
        full = self.params.shape_px
        if shape == full:
            mu_full = True
        elif shape == (bottom - top, right - left):
            mu_full = False
        else:
            raise ValueError(f"expected_e shape {shape}: must be the sensor {full} or the readout area")
        lo, hi = float(u.min()), float(u.max())  # every row of the image is a row of u; NaN propagates
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo < 0:
            raise ValueError("expected_e must be finite and >= 0")
        self._cache = c = None  # free the previous image's arrays before making the new ones
        c = _SignalCache(u, new_run, shape, area)
        if hi > 0:
            p = self.params
            c.has_signal = True
            h, w = bottom - top, right - left
            if mu_full:
                run_a = new_run[top:bottom].copy()
                run_a[0] = True
                rows_a = c.area_rows = u[(np.cumsum(new_run)[top:bottom] - 1)[run_a], left:right]
            else:
                run_a = new_run
                rows_a = c.area_rows = c.rows  # distinct rows of the area
            c.row_index = np.cumsum(run_a) - 1
            # Gaussian std of Z per distinct row of the area, edge values repeated over the
            # _PAD padding columns and rows (padded row i takes area row clip(i - _PAD, 0, h - 1))
            sig = np.empty((rows_a.shape[0], w + 2 * _PAD), dtype=np.float32)
            inner = sig[:, _PAD:-_PAD]
            np.sqrt(rows_a, out=inner)
            inner *= np.float32(p.gain_counts_per_e * math.sqrt(1.0 + p.nu2))
            sig[:, :_PAD] = sig[:, _PAD : _PAD + 1]
            sig[:, -_PAD:] = sig[:, -_PAD - 1 : -_PAD]
            c.sigma_rows = sig
            c.sigma_index = c.row_index[np.clip(np.arange(h + 2 * _PAD) - _PAD, 0, h - 1)]
            c.exact_below_e = p.exact_below_e
            low_per_row = np.count_nonzero((rows_a < p.exact_below_e) & (rows_a > 0), axis=1)
            c.n_low = int(low_per_row[c.row_index].sum())
        self._cache = c
        return c

    def _mean(self, c: _SignalCache) -> np.ndarray:
        """The image's g * gainmap * PSF(*)mu over the area (made on first use and kept in the cache)."""
        if c.mean is None:
            c.mean = self._area_mean(c.rows, c.new_run, c.area)
        return c.mean

    def _area_mean(self, u: np.ndarray, new_run: np.ndarray, area: tuple[int, int, int, int]) -> np.ndarray:
        """g * gainmap * PSF(*)mu over the readout area, float32 counts (mu over the sensor or the area, as in `_runs`)."""
        top, left, bottom, right = area
        mean = self._psf_mean(u, new_run)
        if mean.shape != (bottom - top, right - left):
            mean = mean[top:bottom, left:right].copy()
        np.multiply(mean, self.gain_map[top:bottom, left:right], out=mean)
        mean *= np.float32(self.params.gain_counts_per_e)
        return mean

    def _psf_mean(
        self, u: np.ndarray, new_run: np.ndarray, sink: Callable[[int, int, np.ndarray], None] | None = None
    ) -> np.ndarray | None:
        """PSF (*) mu with 'nearest' extension, float32 (2-D separable, full line profile); mu given
        as its distinct rows `u` and run starts `new_run` (`_runs`).

        Rows that repeat (one position spread over several CCD rows; `new_run` marks where a
        run starts) are convolved along x once; the y convolution is then (K_y E) @ U, K_y the
        'nearest' convolution matrix and E the row -> distinct-row membership, a small banded
        matrix product instead of a full-frame convolution.

        With `sink`, no image-sized array is made: sink(r0, r1, rows) gets rows r0..r1 of the
        result in order, in blocks (the same numbers; each block is valid during the call only).
        """
        prof = self.psf_profile
        r = prof.size // 2
        n_rows = new_run.size
        starts = np.flatnonzero(new_run)
        prof32 = prof.astype(np.float32)
        ux = self._convolve_rows(u, prof32, r)
        if starts.size <= n_rows // 4:
            ends = np.append(starts[1:], n_rows)
            out = np.empty((n_rows if sink is None else min(n_rows, _PSF_BLOCK_ROWS), ux.shape[1]), dtype=np.float32)
            # K_y is banded (|row - source| <= r): each block of output rows needs only the
            # distinct rows whose runs lie within r of it
            # small matrix products: BLAS threads only add hand-off cost here (4-5x slower on a
            # busy 2-core machine), so run them single-threaded
            with one_blas_thread():
                self._banded_products(self._psf_tail, starts, ends, ux, out, r, n_rows, sink, self._band_weights)
            return out if sink is None else None
        full = ux[np.cumsum(new_run) - 1]
        del ux
        out = _fft_convolve_valid(np.pad(full, ((r, r), (0, 0)), mode="edge"), prof32, axis=0)
        if sink is None:
            return out
        sink(0, n_rows, out)
        return None

    def _convolve_rows(self, u: np.ndarray, prof32: np.ndarray, r: int) -> np.ndarray:
        """Each row of `u` convolved with the PSF line profile (2r + 1 taps), 'nearest' beyond the
        ends, float32: the same transform as `_fft_convolve_valid` of the edge-padded rows, with
        the padded rows written into one array of the transform length and the profile's
        spectrum kept (a view into the inverse transform is returned)."""
        k, w = u.shape
        n1, n2 = w + 2 * r, prof32.size
        n = sfft.next_fast_len(n1 + n2 - 1, True)
        spec_k = self._row_kernel_spectra.get(n)
        if spec_k is None:
            spec_k = self._row_kernel_spectra[n] = sfft.rfft(prof32.reshape(1, n2), n, axis=1)
        x = np.zeros((k, n), dtype=np.float32)
        x[:, r : r + w] = u
        x[:, :r] = u[:, :1]
        x[:, r + w : n1] = u[:, -1:]
        spec = sfft.rfft(x, axis=1)
        del x
        spec *= spec_k
        return sfft.irfft(spec, n, axis=1)[:, n2 - 1 : n1]

    @staticmethod
    def _banded_products(
        tail: np.ndarray, starts: np.ndarray, ends: np.ndarray, ux: np.ndarray, out: np.ndarray, r: int, n_rows: int,
        sink: Callable[[int, int, np.ndarray], None] | None, weights: dict | None = None,
    ) -> None:
        """Rows of K_y E U in blocks of `_PSF_BLOCK_ROWS`: into out[r0:r1], or (with `sink`) into
        out[:r1 - r0] and handed to sink(r0, r1, block). `weights`: a cache of the blocks' float32
        weights by run layout (the same for every image of a window)."""
        key = (n_rows, starts.tobytes(), ends.tobytes())
        blocks = None if weights is None else weights.get(key)
        if blocks is None:
            blocks = []
            for r0 in range(0, n_rows, _PSF_BLOCK_ROWS):
                r1 = min(r0 + _PSF_BLOCK_ROWS, n_rows)
                j0 = int(np.searchsorted(ends, r0 - r, side="right"))
                j1 = int(np.searchsorted(starts, r1 + r, side="left"))
                w = _nearest_conv_weights(tail, n_rows, starts[j0:j1], ends[j0:j1], np.arange(r0, r1))
                blocks.append((r0, r1, j0, j1, np.ascontiguousarray(w.T, dtype=np.float32)))
            if weights is not None:
                if len(weights) > 8:
                    weights.clear()
                weights[key] = blocks
        for r0, r1, j0, j1, wt in blocks:
            target = out[r0:r1] if sink is None else out[: r1 - r0]
            np.matmul(wt, ux[j0:j1], out=target)
            if sink is not None:
                sink(r0, r1, target)

    def _lattice_mean(self, c: _SignalCache, binning: tuple[int, int]) -> np.ndarray:
        """Cell sums of g * gainmap * PSF(*)mu over the binned lattice, float32 counts.

        From the cached mean if the image has one; otherwise from the PSF mean in row blocks
        (`_psf_mean` with a sink), so no area-sized array is made. The same numbers either way:
        gain and g multiply each pixel as in `_area_mean`, and each cell is summed over its own
        `by` x `bx` pixels.
        """
        top, left, bottom, right = c.area
        by, bx = binning
        ny, nx = (bottom - top) // by, (right - left) // bx
        wb = nx * bx
        mean = self._pooled("mean", (ny, nx))
        if c.mean is not None:
            block = max(1, _BLOCK_ROWS // by)
            for i0 in range(0, ny, block):  # cell sums in row blocks (no area-sized temporaries)
                i1 = min(i0 + block, ny)
                cells = (i1 - i0, by, nx, bx)
                mean[i0:i1] = c.mean[i0 * by : i1 * by, :wb].reshape(cells).sum(axis=(1, 3), dtype=np.float32)
            return mean
        over_sensor = c.shape != (bottom - top, right - left)  # image over the whole sensor: cut to the area
        offset, col0 = (top, left) if over_sensor else (0, 0)
        g = np.float32(self.params.gain_counts_per_e)
        # g * gain * PSF mean of the block's area rows, after the rows left over from the block
        # before (a cell's rows can straddle two blocks), in one scratch array
        m_buf = self._lattice_buf("lattice_sink", (_PSF_BLOCK_ROWS + by, wb))
        state = {"carry": 0, "cell": 0}

        def sink(r0: int, r1: int, rows: np.ndarray) -> None:
            a0, a1 = max(r0 - offset, 0), min(r1 - offset, ny * by)  # area rows in this block
            if a0 >= a1:
                return
            n0 = state["carry"]
            m = m_buf[: n0 + a1 - a0]
            mb = m[n0:]
            np.multiply(rows[a0 + offset - r0 : a1 + offset - r0, col0 : col0 + wb], self.gain_map[top + a0 : top + a1, left : left + wb], out=mb)
            mb *= g
            k = m.shape[0] // by
            i0 = state["cell"]
            np.sum(m[: k * by].reshape(k, by, nx, bx), axis=(1, 3), dtype=np.float32, out=mean[i0 : i0 + k])
            state["cell"] = i0 + k
            n1 = m.shape[0] - k * by
            m_buf[:n1] = m[k * by :].copy()
            state["carry"] = n1

        self._psf_mean(c.rows, c.new_run, sink)
        assert state["cell"] == ny
        return mean

    # ---------------------------------------------------------------- noise

    def _lattice_buf(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """A float32 scratch array of the lattice kept between frames (contents undefined): a view
        into one buffer per name, as large as the largest lattice asked for (windows alternate)."""
        n = math.prod(shape)
        flat = self._lattice_bufs.get(name)
        if flat is None or flat.size < n:
            flat = self._lattice_bufs[name] = np.empty(n, dtype=np.float32)
        return flat[:n].reshape(shape)

    def _pooled(self, name: str, shape: tuple[int, ...], dtype: type = np.float32) -> np.ndarray:
        """An array for a new lattice (contents undefined): a view into a buffer left by an earlier
        image's lattice, or a new one."""
        n = math.prod(shape)
        key = (name, np.dtype(dtype).str)
        flat = self._lattice_pool.pop(key, None)
        if flat is None or flat.size < n:
            flat = np.empty(n, dtype=dtype)
        return flat[:n].reshape(shape)

    def _recycle(self, c: _SignalCache) -> None:
        """Hand the buffers of an image's lattices to the pool (the image will not come again); the
        pool keeps one buffer per array name, the largest."""
        for lat in c.lattices.values():
            for name in ("mean", "sigma", "skew_c", "mu", "exact"):
                a = getattr(lat, name)
                flat = a.base if a.base is not None and a.base.ndim == 1 else a.reshape(-1)
                key = (name, a.dtype.str)
                old = self._lattice_pool.get(key)
                if old is None or old.size < flat.size:
                    self._lattice_pool[key] = flat
        c.lattices.clear()

    def _buf(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        b = self._bufs.get(name)
        if b is None or b.shape != shape:
            b = np.empty(shape, dtype=np.float32)
            self._bufs[name] = b
        return b

    def _chunks(self, fn: Callable[[int, int, int], None], n: int) -> None:
        """Run fn(chunk, start, stop) over _N_CHUNKS fixed row ranges of 0..n, on the pool if any."""
        edges = [n * k // _N_CHUNKS for k in range(_N_CHUNKS + 1)]
        if self._pool is None:
            for k in range(_N_CHUNKS):
                fn(k, edges[k], edges[k + 1])
            return
        futures = [self._pool.submit(fn, k, edges[k], edges[k + 1]) for k in range(_N_CHUNKS)]
        for f in futures:
            f.result()

    def _draw_signal(self, c: _SignalCache, binning: tuple[int, int]) -> np.ndarray:
        """One noisy realisation of gainmap * PSF(*)X over the area, summed over the on-chip bins (float32, counts).

        The fluctuation Z is drawn over the whole (padded) area; filtering, gain, mean and
        binning then run in blocks of rows, so no other area-sized array is made.
        """
        lattice = self._lattice(c, binning)
        if lattice is not None:
            return self._draw_lattice(lattice, binning)
        assert c.sigma_rows is not None and c.sigma_index is not None
        p = self.params
        mean = self._mean(c)
        h, w = mean.shape
        by, bx = binning
        ny, nx = h // by, w // bx
        wb = nx * bx  # columns read out
        z = self._buf("z", (h + 2 * _PAD, w + 2 * _PAD))
        out = np.empty((ny, nx), dtype=np.float32)
        b, a, cc = self._h
        sigma_rows, sigma_index = c.sigma_rows, c.sigma_index
        top, left = c.area[0], c.area[1]
        block = max(1, _BLOCK_ROWS // by)  # binned rows per block

        def draw(k: int, r0: int, r1: int) -> None:
            _scaled_normals(self._chunk_gens[k], lambda i0, i1: sigma_rows[sigma_index[r0 + i0 : r0 + i1]], z[r0:r1])

        def filter_bin(k: int, q0: int, q1: int) -> None:
            n_max = block * by
            t_buf = np.empty((n_max + 2 * _PAD, wb), dtype=np.float32)
            tmp_buf = np.empty_like(t_buf)
            s_buf = np.empty((n_max, wb), dtype=np.float32) if (by, bx) != (1, 1) else None
            for i0 in range(q0, q1, block):
                i1 = min(i0 + block, q1)
                u0, u1 = i0 * by, i1 * by  # unbinned area rows of this block
                n = u1 - u0
                zk, t, tmp = z[u0 : u1 + 2 * _PAD, : wb + 2 * _PAD], t_buf[: n + 2 * _PAD], tmp_buf[: n + 2 * _PAD]
                # x: t = a (z[j+1] + z[j+3]) + c (z[j] + z[j+4]) + b z[j+2]
                np.add(zk[:, 1:-3], zk[:, 3:-1], out=tmp)
                np.multiply(tmp, a, out=t)
                np.add(zk[:, :-4], zk[:, 4:], out=tmp)
                tmp *= cc
                t += tmp
                np.multiply(zk[:, 2:-2], b, out=tmp)
                t += tmp
                # y, the same taps over rows
                sk = out[i0:i1] if s_buf is None else s_buf[:n]
                tmp = tmp[:n]
                np.add(t[1 : n + 1], t[3 : n + 3], out=tmp)
                np.multiply(tmp, a, out=sk)
                np.add(t[:n], t[4 : n + 4], out=tmp)
                tmp *= cc
                sk += tmp
                np.multiply(t[2 : n + 2], b, out=tmp)
                sk += tmp
                sk *= self.gain_map[top + u0 : top + u1, left : left + wb]
                sk += mean[u0:u1, :wb]
                if s_buf is not None:
                    out[i0:i1] = sk.reshape(i1 - i0, by, nx, bx).sum(axis=(1, 3), dtype=np.float32)

        self._chunks(draw, h + 2 * _PAD)
        if c.n_low:
            # exact compound Poisson: N ~ Poisson(mu); sum of N Gamma(1/nu2, g nu2) pulse heights
            # is Gamma(N/nu2, g nu2) (sum of iid Gammas with a common scale). All electron
            # numbers are drawn before all pulse heights, in row blocks (same deviates as one
            # call each); the numbers are kept in the smallest integer type that holds them.
            g = p.gain_counts_per_e
            blocks = [(i0, min(i0 + _BLOCK_ROWS, h)) for i0 in range(0, h, _BLOCK_ROWS)]
            counts = []
            for i0, i1 in blocks:
                n_e = self._gen.poisson(c.low_pixels(i0, i1)[1])
                counts.append(n_e.astype(np.min_scalar_type(n_e.max())) if n_e.size else n_e)
            for (i0, i1), n_e in zip(blocks, counts):
                pidx, low_mu = c.low_pixels(i0, i1)
                if p.nu2 > 0:
                    x = self._gen.standard_gamma(n_e / p.nu2) * (g * p.nu2)
                else:
                    x = n_e * g
                z.reshape(-1)[pidx] = x - g * low_mu
        self._chunks(filter_bin, ny)
        return out

    def _lattice_kernel(self, factor: int) -> np.ndarray | None:
        if factor not in self._lattice_kernels:
            self._lattice_kernels[factor] = lattice_kernel(self.noise_kernel_1d, factor)
        return self._lattice_kernels[factor]

    def _lattice(self, c: _SignalCache, binning: tuple[int, int]) -> _Lattice | None:
        """The image's signal on the binned lattice, made once per image and binning; None: draw per unbinned pixel."""
        by, bx = binning
        if (by, bx) == (1, 1) or not self.params.binned_fluctuation:
            return None
        if self._lattice_kernel(by) is None or self._lattice_kernel(bx) is None:
            return None
        lat = c.lattices.get(binning)
        if lat is not None:
            return lat
        assert c.area_rows is not None and c.row_index is not None
        p = self.params
        top, left, bottom, right = c.area
        h, w = bottom - top, right - left
        ny, nx = h // by, w // bx
        mean = self._lattice_mean(c, binning)
        mu_b = self._pooled("mu", (ny, nx))
        block = max(1, _BLOCK_ROWS // by)
        for i0 in range(0, ny, block):  # cell sums in row blocks (no area-sized temporaries)
            i1 = min(i0 + block, ny)
            u0, u1 = i0 * by, i1 * by
            mu = c.area_rows[c.row_index[u0:u1], : nx * bx]
            mu_b[i0:i1] = mu.reshape(i1 - i0, by, nx, bx).sum(axis=(1, 3), dtype=np.float32)
        gkey = (c.area, binning)
        gain = self._lattice_gain.get(gkey)
        if gain is None:
            gain = np.empty((ny, nx), dtype=np.float32)
            for i0 in range(0, ny, block):
                i1 = min(i0 + block, ny)
                g = self.gain_map[top + i0 * by : top + i1 * by, left : left + nx * bx]
                gain[i0:i1] = g.reshape(i1 - i0, by, nx, bx).mean(axis=(1, 3), dtype=np.float64)
            if len(self._lattice_gain) > 16:
                self._lattice_gain.clear()
            self._lattice_gain[gkey] = gain
        shape = (ny + 2 * _PAD, nx + 2 * _PAD)
        mu_pad = self._lattice_buf("lattice_z", shape)  # mu_b with its edge values repeated (the draw's buffer, free here)
        mu_pad[_PAD:-_PAD, _PAD:-_PAD] = mu_b
        mu_pad[_PAD:-_PAD, :_PAD] = mu_b[:, :1]
        mu_pad[_PAD:-_PAD, -_PAD:] = mu_b[:, -1:]
        mu_pad[:_PAD] = mu_pad[_PAD]
        mu_pad[-_PAD:] = mu_pad[-_PAD - 1]
        sigma, skew_c = skewed_normal_terms(
            mu_pad, p.gain_counts_per_e * math.sqrt(1.0 + p.nu2), p.nu2, p.exact_below_e,
            out=(self._pooled("sigma", shape), self._pooled("skew_c", shape)), work=mu_pad,
        )
        exact = self._pooled("exact", (ny, nx), bool)
        np.less(mu_b, np.float32(p.exact_below_e), out=exact)
        exact &= mu_b > 0
        lat = _Lattice(mean, sigma, skew_c, gain, mu_b, exact, int(np.count_nonzero(exact)))
        c.lattices[binning] = lat
        return lat

    def _draw_lattice(self, lat: _Lattice, binning: tuple[int, int]) -> np.ndarray:
        """One noisy realisation of the binned signal drawn on the readout lattice (float32 counts)."""
        p = self.params
        ny, nx = lat.mean.shape
        z = self._lattice_buf("lattice_z", (ny + 2 * _PAD, nx + 2 * _PAD))
        t = self._lattice_buf("lattice_t", (ny + 2 * _PAD, nx))
        tmp = self._lattice_buf("lattice_tmp", (ny + 2 * _PAD, nx))
        sigma, skew_c = lat.sigma, lat.skew_c

        def draw(k: int, r0: int, r1: int) -> None:
            # s (z + c (z^2 - 1)) in blocks of `_BLOCK_ROWS` rows (the deviates of `_scaled_normals`)
            gen = self._chunk_gens[k]
            q = self._lattice_buf(f"lattice_q{k}", (_BLOCK_ROWS, z.shape[1]))
            for i0 in range(r0, r1, _BLOCK_ROWS):
                i1 = min(i0 + _BLOCK_ROWS, r1)
                zb = _normals(gen, (i1 - i0,) + z.shape[1:])
                qb = q[: i1 - i0]
                np.square(zb, out=qb)
                qb -= np.float32(1.0)
                qb *= skew_c[i0:i1]
                qb += zb
                np.multiply(qb, sigma[i0:i1], out=z[i0:i1])

        self._chunks(draw, z.shape[0])
        if lat.n_exact:
            # exact compound Poisson of the cell sum: N ~ Poisson(sum mu); Gamma(N/nu2, g nu2) pulse
            # heights. All electron numbers are drawn before all pulse heights, in row blocks (the
            # same deviates as one call each, in row-major order of the cells); the numbers are
            # kept in the smallest integer type that holds them.
            g = p.gain_counts_per_e
            blocks = [(i0, min(i0 + _BLOCK_ROWS, ny)) for i0 in range(0, ny, _BLOCK_ROWS)]

            def cells(i0: int, i1: int) -> tuple[np.ndarray, np.ndarray]:
                """Exactly drawn cells of lattice rows i0..i1: flat indices into the padded lattice, expected electrons (float64)."""
                flat = np.flatnonzero(lat.exact[i0:i1])
                mu = lat.mu[i0:i1].reshape(-1)[flat].astype(np.float64)
                flat += (2 * _PAD) * (flat // nx) + (i0 + _PAD) * (nx + 2 * _PAD) + _PAD
                return flat, mu

            counts, drawn = [], []
            for i0, i1 in blocks:
                idx, mu = cells(i0, i1)
                n_e = self._gen.poisson(mu)
                counts.append(n_e.astype(np.min_scalar_type(n_e.max())) if n_e.size else n_e)
                drawn.append((idx, mu))  # kept for the pulse heights (16 bytes per exact cell)
            for (idx, mu), n_e in zip(drawn, counts):
                x = self._gen.standard_gamma(n_e / p.nu2) * (g * p.nu2) if p.nu2 > 0 else n_e * g
                z.reshape(-1)[idx] = x - g * mu
        b, a, c = (np.float32(v) for v in self._lattice_kernel(binning[1])[2:])  # type: ignore[index]
        # x: t = a (z[j+1] + z[j+3]) + c (z[j] + z[j+4]) + b z[j+2]
        np.add(z[:, 1:-3], z[:, 3:-1], out=t)
        t *= a
        np.add(z[:, :-4], z[:, 4:], out=tmp)
        tmp *= c
        t += tmp
        np.multiply(z[:, 2:-2], b, out=tmp)
        t += tmp
        # y, with the lattice kernel of the row binning
        b, a, c = (np.float32(v) for v in self._lattice_kernel(binning[0])[2:])  # type: ignore[index]
        out = z[:ny, :nx]  # z is no longer needed; the signal is valid until the next frame
        np.add(t[1:-3], t[3:-1], out=out)
        out *= a
        tmp = tmp[:ny]
        np.add(t[:-4], t[4:], out=tmp)
        tmp *= c
        out += tmp
        np.multiply(t[2:-2], b, out=tmp)
        out += tmp
        out *= lat.gain
        out += lat.mean
        return out

    def _readout_maps(
        self, exposure_s: float, area: tuple[int, int, int, int], binning: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """Offset (bias + dark + 0.5) and noise sigma per readout pixel (float32), and the quadrant column split; cached."""
        p = self.params
        key = (float(exposure_s), area, binning)
        ro = self._readout.get(key)
        if ro is None:
            ny, nx = self._frame_shape(area, binning)
            by, bx = binning
            top, left, _, _ = area
            _, split = self._quadrant_split(area, binning)
            offset = np.empty((ny, nx), dtype=np.float32)
            sigma = np.empty((ny, nx), dtype=np.float32)
            block = max(1, _BLOCK_ROWS // by)
            for i0 in range(0, ny, block):  # float64 temporaries of a few rows only
                i1 = min(i0 + block, ny)
                dark = self._dark_rows(top + i0 * by, top + i1 * by)[:, left : left + nx * bx].astype(np.float64)
                dark *= exposure_s
                dark = dark.reshape(i1 - i0, by, nx, bx).sum(axis=(1, 3))
                offset[i0:i1] = self._bias_map(area, binning, i0, i1) + dark + 0.5  # +0.5: round half up by truncation
                sigma[i0:i1] = np.sqrt(p.read_noise_counts**2 + dark)
            ro = (offset, sigma, split)
            if len(self._readout) > 16:
                self._readout.clear()
            self._readout[key] = ro
        return ro

    def _read_out(
        self, signal: np.ndarray | None, exposure_s: float, area: tuple[int, int, int, int], binning: tuple[int, int]
    ) -> tuple[np.ndarray, int]:
        """Add bias, dark, read and row noise; round, clip to 16 bit; count saturated pixels."""
        p = self.params
        offset, sigma, split = self._readout_maps(exposure_s, area, binning)
        ny, nx = offset.shape
        raw = np.empty((ny, nx), dtype=np.float32)

        def read(k: int, r0: int, r1: int) -> None:
            rk = raw[r0:r1]
            _scaled_normals(self._chunk_gens[k], lambda i0, i1: sigma[r0 + i0 : r0 + i1], rk)
            rk += offset[r0:r1]
            if signal is not None:
                rk += signal[r0:r1]

        self._chunks(read, ny)
        if p.row_noise_counts > 0:
            rn = self._gen.standard_normal((ny, 2), dtype=np.float32) * np.float32(p.row_noise_counts)
            raw[:, :split] += rn[:, :1]
            raw[:, split:] += rn[:, 1:]
        np.clip(raw, 0.0, float(p.saturation_counts), out=raw)
        n_sat = int(np.count_nonzero(raw >= p.saturation_counts))
        data = np.empty((ny, nx), dtype=np.uint16)
        np.copyto(data, raw, casting="unsafe")  # truncation of x + 0.5 >= 0 = rounding
        return data, n_sat

    def _mean_of_frames(
        self, expected_e: np.ndarray | None, exposure_s: float, n: int, area: tuple[int, int, int, int]
    ) -> np.ndarray:
        """Mean of `n` unbinned frames that stay below full scale, drawn as one frame with its law (float64 counts).

        `expected_e`: the expected electrons of all n frames together. The n signals add up to one draw of n times the expected electrons (independent
        compound-Poisson fields add to one with the summed rate; PSF and gain are linear); read,
        dark and row noise and each frame's rounding (variance 1/12) average to 1/n of their
        variance. Used for the flats and darks of the gain reference.
        """
        p = self.params
        offset, sigma, split = self._readout_maps(exposure_s, area, (1, 1))
        scale = np.sqrt((sigma.astype(np.float64) ** 2 + 1.0 / 12.0) / n).astype(np.float32)
        noise = np.empty(offset.shape, dtype=np.float32)
        _scaled_normals(self._gen, lambda i0, i1: scale[i0:i1], noise)
        out = noise.astype(np.float64)
        out += offset
        out -= 0.5  # offset holds +0.5 for rounding by truncation
        if expected_e is not None:
            c = self._signal(expected_e, area)
            if c.has_signal:
                signal = self._draw_signal(c, (1, 1))
                signal /= np.float32(n)
                out += signal
        if p.row_noise_counts > 0:
            rn = self._gen.standard_normal((offset.shape[0], 2)) * (p.row_noise_counts / math.sqrt(n))
            out[:, :split] += rn[:, :1]
            out[:, split:] += rn[:, 1:]
        return out
