"""The O-K pre-edge of FePO4 (physics-seed-systems.md §B.1, §D.1 [S:KIN10]): O 2p states mixed with
the empty Fe3+ 3d states give one pre-edge peak near 528.5 eV in FePO4 and none in LiFePO4 (Fe2+,
Mott-Hubbard). It grows with the FePO4 fraction of a row (the phases' paths), its area is 15 % of
the 528-545 eV O-K area (the middle of the sourced 10-20 % [est]), and it takes its strength from
the continuum under it (Bethe sum rule), as the d0 Ti doublet does."""

from __future__ import annotations

import numpy as np
import pytest

from insitem.simulators.eels import EELSParameters, EELSSynthesizer
from insitem.simulators.lamella import FEPO4, LIFEPO4
from insitem.simulators.sample import column_from_phases

THICKNESS_M = 60e-9


def _o_k(fepo4_fraction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free O-K spectra (rows: FePO4 fractions), the energy axis."""
    f = np.asarray(fepo4_fraction, float)
    paths = np.stack([(1 - f) * THICKNESS_M, f * THICKNESS_M], axis=1)
    col = column_from_phases(np.arange(f.size) * 5.7e-9, paths, (LIFEPO4, FEPO4))
    E = 500.0 + 0.1 * np.arange(800)
    return EELSSynthesizer().synthesize(E, col, 1e6, blur_rows=False), E


def _single_o_atom(syn: EELSSynthesizer, fe3: bool) -> tuple[np.ndarray, np.ndarray, float]:
    """(energy grid, O-K per O atom, hydrogenic target over the sum-rule window) of an FePO4 O (fe3)
    or an O without pre-peaks."""
    p = syn.params
    h = 0.02
    E = np.arange(p.o_threshold_eV - 5.0, p.o_threshold_eV + 80.0, h) + h / 2
    comps = {c.name: c.shape / h for c in syn._core_components(E, np.ones(E.size, bool), h, ["O"])}
    shape = comps["O main Fe3"] + comps["O pre Fe3"] if fe3 else comps["O main 0"]
    bank = syn._parent_bank_weights()
    shape = shape + sum(w * comps[f"O b {k}"] for k, w in enumerate(bank))
    window = E < p.o_threshold_eV + p.k_sum_rule_window_eV
    target = float(syn._hydro("O", E[window], p.o_threshold_eV).sum() * h)
    return E, shape, target


def test_the_pre_edge_is_in_fepo4_rows_only_and_grows_with_the_fepo4_fraction() -> None:
    spectra, E = _o_k(np.array([0.0, 0.25, 0.5, 1.0]))
    pre = (E > 527.5) & (E < 529.5)
    below = (E > 520.0) & (E < 526.0)  # the pre-edge background: nothing of O-K yet
    excess = spectra[:, pre].sum(axis=1) - spectra[:, below].mean(axis=1) * pre.sum()
    assert abs(excess[0]) < 0.02 * excess[3]  # LiFePO4: no pre-edge
    assert excess[1:] / excess[3] == pytest.approx([0.25, 0.5, 1.0], rel=0.06)
    peak = E[pre][np.argmax(spectra[3, pre])]
    assert peak == pytest.approx(528.5, abs=0.2)


def test_the_pre_edge_area_is_fifteen_percent_of_the_528_545_ev_o_k() -> None:
    syn = EELSSynthesizer()
    E, plain, _ = _single_o_atom(syn, fe3=False)
    s40 = syn._sigma("O", syn.params.o_threshold_eV, 40.0)
    h = float(E[1] - E[0])
    band = (E >= 528.0) & (E <= 545.0)
    area_528_545 = float(plain[band].sum() * h) / s40
    assert area_528_545 == pytest.approx(0.397, abs=0.005)  # the number O_FE3_PREPEAK_AREA stands on
    c0, fwhm, a = syn.params.o_fe3_prepeak
    assert (c0, fwhm) == (528.5, 1.5)
    assert a / area_528_545 == pytest.approx(0.15, abs=0.005)


@pytest.mark.parametrize("fe3", [True, False])
def test_the_sum_rule_holds_with_and_without_the_pre_edge(fe3: bool) -> None:
    syn = EELSSynthesizer()
    E, shape, target = _single_o_atom(syn, fe3)
    h = float(E[1] - E[0])
    window = E < syn.params.o_threshold_eV + syn.params.k_sum_rule_window_eV
    assert float(shape[window].sum() * h) == pytest.approx(target, rel=1e-3)


def test_other_materials_are_untouched() -> None:
    """LiFePO4, and every preset without FePO4, weights the new components by zero."""
    syn = EELSSynthesizer(EELSParameters())
    col = column_from_phases(np.zeros(1), np.array([[THICKNESS_M, 0.0]]), (LIFEPO4, FEPO4))
    assert syn._fe3_o_fraction(col).tolist() == [0.0]
