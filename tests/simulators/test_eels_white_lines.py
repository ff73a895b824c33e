"""Fe-L2,3 and V-L2,3 white lines by oxidation state (simulators/eels.py TM_WHITE_LINES).

The white-line area follows the empty 3d states, as the Ti rule (Pearson et al. 1993 via
physics-seed-systems.md D.2): Fe2+ (d6) 4 holes, Fe3+ (d5) 5, V3+ (d2) 8. Fe2+ has its L3 maximum at
707.8 eV, Fe3+ at 709.5 eV after a weaker 708.0 eV peak [S:VAK98]; a two-phase LiFePO4/FePO4 row
mixes the two by its Fe atoms.
"""

from __future__ import annotations

import numpy as np
import pytest

from insitem.simulators.eels import CORE_EDGES, TM_WHITE_LINES, EELSParameters, EELSSynthesizer, white_line_state_weights
from insitem.simulators.lamella import LamellaCell
from insitem.simulators.sample import Sample, SampleParameters

E_FE = 680.0 + 0.1 * np.arange(1024)


def test_white_line_areas_follow_the_d_holes_and_the_continuum_rejoins_the_hydrogenic_edge() -> None:
    s = EELSSynthesizer()
    fe2, fe3 = TM_WHITE_LINES["Fe"][2], TM_WHITE_LINES["Fe"][3]
    assert s.white_line_area("Fe", fe3.d_holes) / s.white_line_area("Fe", fe2.d_holes) == pytest.approx(5 / 4)
    # 50-100 eV above L3 the shape is the hydrogenic L edge (the normalisation region of the rule)
    on = CORE_EDGES["Fe"][1]
    E = np.arange(on + 50.0, on + 100.0, 0.05)
    for lines in (fe2, fe3):
        assert s._tm_l_shape("Fe", lines, E).sum() == pytest.approx(s._hydro("Fe", E).sum(), rel=1e-3)
    # and the white lines are there: L3 holds more than the hydrogenic edge over its first 10 eV
    E3 = np.arange(on - 2.0, on + 8.0, 0.05)
    assert s._tm_l_shape("Fe", fe2, E3).sum() > 3 * s._hydro("Fe", E3).sum()


def test_state_weights_interpolate_between_the_tabulated_states() -> None:
    w = white_line_state_weights([2, 3], np.array([2.0, 2.25, 3.0, np.nan, 4.0]))
    assert np.allclose(w[2], [1.0, 0.75, 0.0, 1.0, 0.0])
    assert np.allclose(w[3], [0.0, 0.25, 1.0, 0.0, 1.0])


def test_fe_l3_moves_from_fe2_to_fe3_as_the_lfp_rows_delithiate() -> None:
    synth = EELSSynthesizer(EELSParameters(Cc_m=0.0))
    l3 = (E_FE > 700) & (E_FE < 716)
    maxima, ratio = [], []
    for xi in (0.01, 0.25, 0.5, 0.75, 0.99):
        cell = LamellaCell()
        cell.xi_pos = xi
        J = synth.synthesize(E_FE, cell.column_state(np.array([200e-9])), 1e8)[0]
        maxima.append(float(E_FE[l3][np.argmax(J[l3])]))
        ratio.append(float(J[np.argmin(np.abs(E_FE - 709.5))] / J[np.argmin(np.abs(E_FE - 707.8))]))
    assert maxima[0] == pytest.approx(707.8, abs=0.15)  # LiFePO4: Fe2+ [S:VAK98]
    assert maxima[-1] == pytest.approx(709.5, abs=0.15)  # FePO4: Fe3+
    assert np.all(np.diff(ratio) > 0)


def test_v_l3_of_lvp_sits_at_the_v3_maximum() -> None:
    sample = Sample(SampleParameters.lfp_lagp_lvp_lamella())
    y = np.array([2.0e-6])  # inside the LVP layer (LAGP is 1.5 um from y = 0)
    col = sample.column_state(y)
    assert col.layer_names[int(col.layer_index[0])] == "LVP"
    assert col.oxidation_state["V"][0] == 3
    E = 490.0 + 0.1 * np.arange(400)
    J = EELSSynthesizer(EELSParameters(Cc_m=0.0)).synthesize(E, col, 1e8)[0]
    l3 = (E > 510) & (E < 519)
    assert E[l3][np.argmax(J[l3])] == pytest.approx(TM_WHITE_LINES["V"][3].L3[0][0], abs=0.15)
