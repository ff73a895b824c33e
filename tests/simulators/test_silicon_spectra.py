"""Low-loss spectra of the Si cluster (simulators/eels.py on simulators/silicon.py columns).

Each row crosses up to three phases (Li2O, c-Si core, a-LixSi shell) with its own path lengths. Its
valence loss is the sum of the phases' Drude losses weighted by L_p/lambda_p (physics-seed-systems.md
A.5 line profile), so (i) the row's total scattering is its own t/lambda (Fourier-log: all counts /
unscattered = exp(t/lambda)) whatever the other rows of its phase hold, and (ii) its plasmon sits at
the energy of the phase there: 16.7 eV in c-Si, Ep(x) in a-LixSi (A.4), 22.6 eV in Li2O.
"""

from __future__ import annotations

import numpy as np
import pytest

from insitem.simulators.eels import EELSParameters, EELSSynthesizer
from insitem.simulators.silicon import SiCluster, li_si_plasmon_eV

Y = np.arange(-150e-9, 700e-9, 5e-9)


def _half_lithiated() -> SiCluster:
    c = SiCluster()
    for _ in range(25):
        c.advance(1.0, -0.2, 1e-6)
    assert 0.1 < c.lithiated_fraction.mean() < 0.9  # cores and shells side by side
    return c


def test_every_row_scatters_its_own_t_over_lambda() -> None:
    c = _half_lithiated()
    col = c.column_state(Y)
    # no chromatic blur, which moves counts between rows; a window holding nearly all the losses
    synth = EELSSynthesizer(EELSParameters(Cc_m=0.0))
    E = -5.0 + 0.25 * np.arange(3220)  # -5 .. 800 eV
    J = synth.synthesize(E, col, 1e6)
    matter = col.thickness_m > 0
    I0 = 1e6 * np.exp(-col.t_over_lambda_all[matter])
    measured = np.log(J[matter].sum(axis=1) / I0)
    # losses beyond 800 eV (Drude tail, edge tails) hold < 1 % of t/lambda
    assert np.allclose(measured, col.t_over_lambda[matter], rtol=0.01, atol=1e-3)
    # rows of one phase differ: thin rims scatter less than thick centres (t/lambda 0.05 to 0.5)
    assert np.ptp(measured) > 0.3


def _peaks(c: SiCluster) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    col = c.column_state(Y)
    synth = EELSSynthesizer(EELSParameters(Cc_m=0.0))
    E = 5.0 + 0.05 * np.arange(600)  # 5-35 eV
    J = synth.synthesize(E, col, 1e6)
    return E, J, col.phase_path_m, col.thickness_m


def test_the_plasmon_of_each_row_is_the_plasmon_of_the_phases_there() -> None:
    # the single-scattering maximum lies a little below Ep (angular factor); plural scattering is small
    pristine, lithiated = SiCluster(), SiCluster()
    for _ in range(600):
        lithiated.advance(1.0, -0.2, 1e-6)
    for c, k, ep, tol in ((pristine, 1, 22.6, 1.0), (pristine, 2, 16.7, 0.4),
                          (lithiated, 3, li_si_plasmon_eV(lithiated.params.shell_x), 0.4)):
        E, J, L, t = _peaks(c)
        rows = (L[:, k] > 0.99 * t) & (t > 30e-9)
        assert rows.sum() >= 5
        assert np.all(np.abs(E[np.argmax(J[rows], axis=1)] - ep) < tol)
    # rows crossing core and shell: the mean loss over 8-20 eV falls as the shell's share grows
    E, J, L, t = _peaks(_half_lithiated())
    mixed = (L[:, 2] > 0.1 * t) & (L[:, 3] > 0.1 * t)
    assert mixed.sum() >= 5
    sel = (E > 8) & (E < 20)
    mean_loss = (J[:, sel] * E[sel]).sum(axis=1) / J[:, sel].sum(axis=1)
    share = L[mixed, 3] / t[mixed]
    assert np.corrcoef(share, mean_loss[mixed])[0, 1] < -0.9
