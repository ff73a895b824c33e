"""The plan: durations, exposures and dose computed independently from the protocol's numbers."""

from __future__ import annotations

import pytest

from insitem.protocols.loader import load
from insitem.protocols.plan import make_plan


def test_ex_situ_duration_and_dose_from_first_principles() -> None:
    p = load("ex-situ-lasgtp")
    plan = make_plan(p)
    # 50 cycles of 0.5 -> 2.5 -> 0.5 V at 40 mV/min: 4 V of travel per cycle
    cv_s = 50 * 2 * (2.5 - 0.5) / (40e-3 / 60)
    rest_s = 120.0
    assert plan.duration_s == pytest.approx(cv_s + rest_s)
    assert plan.duration_s / 3600 == pytest.approx(83.37, abs=0.01)  # "about 85 hours"
    # a 1.5 s low-loss and two 30 s exposures at I/(e A) with I = 0.5 nA, A = pi (1 um)^2
    rate = 0.5e-9 / (1.602176634e-19 * 3.141592653589793e-12)
    assert plan.dose_e_per_m2 == pytest.approx(61.5 * rate)
    assert plan.exposures_per_window() == {"low-loss": 1, "li-k": 1, "ti-l-o-k": 1}
    # the staircase has one point per mV
    assert plan.steps[0].n_points() == 50 * 4000


def test_exposures_of_one_trigger_run_back_to_back_after_the_dead_time() -> None:
    plan = make_plan(load("ex-situ-lasgtp"))
    ll, a, b = plan.images
    t0 = plan.steps[1].t_start_s
    assert ll.t_start_s == pytest.approx(t0)
    # low-loss: 30 sub-exposures of 50 ms, each followed by the 0.6 s dead time
    t1 = t0 + 30 * (0.05 + 0.6)
    assert a.t_start_s == pytest.approx(t1)
    # li-k is summed from 4 sub-exposures of 7.5 s, each followed by the 0.6 s dead time
    assert [e.t_start_s for e in plan.exposures[30:34]] == pytest.approx([t1 + k * 8.1 for k in range(4)])
    assert b.t_start_s == pytest.approx(t1 + 4 * (7.5 + 0.6))
    assert a.potential_V is None  # rest = open circuit


def test_in_situ_exposures_at_vertices_and_every_interval() -> None:
    plan = make_plan(load("in-situ-lasgtp"))
    cv = plan.steps[1]
    rate = 40e-3 / 60
    vertex_times = [cv.t_start_s + 1.5 / rate, cv.t_start_s + 1.5 / rate + 2.0 / rate]
    ti = [e for e in plan.images if e.window == "ti-l-o-k" and e.step_index == 1]
    assert [e.t_start_s for e in ti] == pytest.approx(vertex_times)
    assert [e.potential_V for e in ti] == pytest.approx([2.5, 0.5])
    li = [e for e in plan.images if e.window == "li-k" and e.step_index == 1]
    assert len(li) == int(cv.duration_s // 300) + (1 if cv.duration_s % 300 else 0)


def test_potential_follows_the_triangle() -> None:
    plan = make_plan(load("ex-situ-lasgtp"))
    st = plan.steps[0]
    rate = 40e-3 / 60
    assert st.potential_at(1.0 / rate) == pytest.approx(1.5)
    assert st.potential_at(2.0 / rate) == pytest.approx(2.5)
    assert st.potential_at(3.0 / rate) == pytest.approx(1.5)
    assert st.cycle_at(4.0 / rate + 1) == 2
