"""Low-loss spectra of the Si cluster (simulators/eels.py on simulators/silicon.py columns).

Each row crosses up to three phases (Li2O, c-Si core, a-LixSi shell) with its own path lengths. Its
valence loss is the sum of the phases' Drude losses weighted by L_p/lambda_p (physics-seed-systems.md
A.5 line profile), so (i) the row's total scattering is its own t/lambda (Fourier-log: all counts /
unscattered = exp(t/lambda)) whatever the other rows of its phase hold, and (ii) its plasmon sits at
the energy of the phase there: 16.7 eV in c-Si, Ep(x) in a-LixSi (A.4), 22.6 eV in Li2O. The Si-L2,3
edge starts at 99.8 eV in c-Si and ~0.8 eV lower in Li3.75Si (A.5 [est]), its steps normalised by the
Bethe sum rule over 80 eV (D.2).
"""

from __future__ import annotations

import numpy as np
import pytest

from insitem.simulators.eels import CORE_EDGES, SI_L_ONSETS_eV, EELSParameters, EELSSynthesizer
from insitem.simulators.sample import Sample
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


def test_si_l23_onset_moves_down_in_the_lithiated_shell_and_keeps_the_sum_rule() -> None:
    synth = EELSSynthesizer(EELSParameters(Cc_m=0.0))
    # per atom: steps + continuum integrate to the hydrogenic edge over onset - 5 .. onset + 80 eV (D.2)
    on = CORE_EDGES["Si"][1]
    Eg = np.arange(on - 6.0, on + 80.0, 0.01)
    for L3 in SI_L_ONSETS_eV.values():
        assert synth._si_l_shape(L3, Eg).sum() == pytest.approx(synth._hydro("Si", Eg).sum(), rel=1e-3)
    E = 80.0 + 0.05 * np.arange(1200)
    rise = []
    for seconds in (0, 600):
        c = SiCluster()
        for _ in range(seconds):
            c.advance(1.0, -0.2, 1e-6)
        J = synth.synthesize(E, c.column_state(np.array([50e-9])), 1e8)[0]
        sel = (E > 95) & (E < 105)
        rise.append(float(E[sel][np.argmax(np.gradient(J)[sel])]))
    assert rise[0] == pytest.approx(SI_L_ONSETS_eV[0.0] + 0.1, abs=0.2)  # c-Si: between the L3 and L2 steps
    shift = 0.8 * c.params.shell_x / 3.75  # A.5 [est]: -0.8 eV at x = 3.75, linear in x
    assert rise[0] - rise[1] == pytest.approx(shift, abs=0.15)


def test_phases_without_a_declared_si_state_keep_the_hydrogenic_si_l_edge() -> None:
    # LASGTP's Si (a phosphate, Si4+) declares no state: its Si-L stays the hydrogenic edge
    synth = EELSSynthesizer()
    col = Sample().column_state(np.array([1e-6]))
    E = 60.0 + 0.1 * np.arange(800)
    synth.synthesize(E, col, 1e6)
    cache = next(iter(synth._caches.values()))
    W = synth._component_weights(cache, col)
    names = [c.name for c in cache.components]
    assert W[0, names.index("Si L")] == pytest.approx(col.areal_density_per_m2["Si"][0])
    assert W[0, names.index("Si L 0")] == 0.0 and W[0, names.index("Si L -3.75")] == 0.0
