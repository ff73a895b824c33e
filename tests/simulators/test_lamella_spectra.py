"""Low-loss spectra of the LFP | LAGP lamella window (simulators/eels.py on simulators/lamella.py columns).

FePO4 has an interband peak near 5 eV that LiFePO4 lacks ([S:MOR09], physics-seed-systems.md B.1): a
Lorentz oscillator whose maximum in the single-scattering distribution is 0.25 x the plasmon maximum
[est]. A row of the two-phase electrode is the path-weighted sum of both phases' losses (isosbestic
two-phase rule [S:LAF06]), so the peak measured by analysis/valence.py grows linearly with the FePO4
fraction while the Li-K of the row falls.
"""

from __future__ import annotations

import numpy as np
import pytest

from insitem.analysis.axes import EnergyAxis
from insitem.analysis.valence import analyse_valence
from insitem.simulators.eels import EELSParameters, EELSSynthesizer, drude_ssd, valence_ssd
from insitem.simulators.lamella import FEPO4, LIFEPO4, LamellaCell

E0, BETA = 300e3, 10e-3
#: the micro-battery-lagp protocol's low-loss window: 2-104.3 eV at 0.1 eV per channel
AXIS = EnergyAxis(offset_eV=2.0, scale_eV=0.1, size=1024)


def test_the_fepo4_peak_is_a_quarter_of_the_plasmon_in_single_scattering_and_lifepo4_has_none() -> None:
    E = np.arange(0.05, 100.0, 0.01)
    fp = valence_ssd(E, FEPO4, E0, BETA)
    drude = drude_ssd(E, FEPO4.plasmon_eV, FEPO4.plasmon_width_eV, E0, BETA)
    extra = fp - drude
    (e5, g5, h5), = FEPO4.valence_oscillators
    # the loss function peaks at E5; the angular factor ln(1 + beta^2/theta_E^2) pulls the
    # single-scattering maximum ~0.1 eV lower
    assert E[np.argmax(extra)] == pytest.approx(e5 - 0.1, abs=0.05)
    assert extra.max() == pytest.approx(h5 * drude.max(), rel=1e-3)
    # the oscillator is a peak of the spectrum, not a shoulder: a minimum lies between it and the plasmon
    sl = (E > e5) & (E < FEPO4.plasmon_eV)
    assert fp[sl].min() < 0.9 * fp[np.argmin(np.abs(E - e5))]
    # LiFePO4: the Drude loss alone, rising monotonically from 2 eV to its plasmon
    lfp = valence_ssd(E, LIFEPO4, E0, BETA)
    rising = (E > 2.0) & (E < LIFEPO4.plasmon_eV - 2.0)
    assert np.all(np.diff(lfp[rising]) > 0)


def _lfp_row_frame(xi: float, synth: EELSSynthesizer):  # noqa: ANN202
    cell = LamellaCell()
    cell.xi_pos = xi
    y = np.array([-300e-9, -200e-9, 200e-9, 300e-9])  # two LAGP rows, two LFP rows
    J = synth.synthesize(AXIS.values_eV, cell.column_state(y), 1e8)
    lfp = analyse_valence(J, AXIS, np.array([False, False, True, True]))
    lagp = analyse_valence(J, AXIS, np.array([True, True, False, False]))
    return lfp, lagp


def test_the_5ev_peak_of_the_lfp_rows_grows_linearly_with_the_fepo4_fraction_and_li_k_falls() -> None:
    synth = EELSSynthesizer(EELSParameters(Cc_m=0.0))
    xi = np.array([0.01, 0.25, 0.5, 0.75, 0.99])
    frames = [_lfp_row_frame(float(x), synth) for x in xi]
    peak = np.array([f[0].peak5_ratio for f in frames])
    li = np.array([f[0].li_k_ratio for f in frames])
    # two-phase rule: a straight line in the FePO4 fraction (plural scattering bends it by < 1 %)
    slope, icpt = np.polyfit(xi, peak, 1)
    assert np.max(np.abs(peak - (slope * xi + icpt))) < 0.01 * slope
    assert slope > 0.01
    assert abs(peak[0]) < 0.05 * peak[-1]  # LiFePO4 alone: no peak above the Drude background
    # Li leaves: the row's Li-K per plasmon count falls with it, monotonically
    assert np.all(np.diff(li) < 0)
    # the LAGP rows do not change
    lagp = np.array([f[1].peak5_ratio for f in frames])
    assert np.ptp(lagp) < 1e-9 + 1e-6 * abs(lagp[0])
