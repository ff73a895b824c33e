"""Drift-tracking exposures in the plan (protocol `drift.track_every` / `track_groups`,
docs/drift.md): where the planner puts them, their count, beam-on time and dose apart and in the
totals, the dose budget and the tracking cap, and the one-line refusals."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from shipped_protocol import variant

from insitem.cli import main as cli
from insitem.drivers.errors import ProtocolError
from insitem.protocols.loader import loads
from insitem.protocols.plan import TRACK_LEAD_S, Plan, make_plan

E_A2 = 1e20
DEAD_S = 0.6  # the in-situ protocol's camera dead time


def in_situ(*drift_lines: str, **replace: str) -> str:
    """in-situ-lasgtp without its tracking frames (`track_groups: true`), with lines added to its
    drift section (and other lines replaced)."""
    pairs = [("  track_groups: true\n", ""),
             ("  dead_band: 2 nm", "  dead_band: 2 nm\n" + "".join(f"  {line}\n" for line in drift_lines).rstrip("\n"))]
    return variant("in-situ-lasgtp", *pairs, *replace.items())


def _busy(plan: Plan) -> list[tuple[float, float, str]]:
    return sorted((e.t_start_s, e.t_end_s + DEAD_S, e.kind) for e in plan.exposures)


def test_tracking_every_ten_minutes_never_overlaps_and_leaves_room_before_the_next_group() -> None:
    plan = make_plan(loads(in_situ("track_every: 10 min")))
    base = make_plan(loads(in_situ()))
    tracking = plan.tracking
    # one per 10 min of the 101 min run, each moved at most until the camera is free
    assert len(tracking) == math.ceil(base.duration_s / 600)
    for k, e in enumerate(tracking):
        assert k * 600 <= e.t_start_s < (k + 1) * 600
        assert e.window == "low-loss" and e.exposure_s == 0.05 and e.n_subframes == 1 and e.trigger == "drift-tracking"
    busy = _busy(plan)
    for (s0, e0, _), (s1, _, k1) in zip(busy, busy[1:]):
        assert s1 >= e0 - 1e-9  # no overlap: each exposure and its dead time before the next
    for i, (s, e, kind) in enumerate(busy[:-1]):
        if kind == "tracking":  # a group of its own: the next exposure starts after dead time + lead
            assert busy[i + 1][0] - (e - DEAD_S) >= DEAD_S + TRACK_LEAD_S - 1e-9
    # the science exposures are the shipped protocol's, unmoved; indices run in time order
    assert [(e.t_start_s, e.window) for e in plan.exposures if not e.tracking] == [(e.t_start_s, e.window) for e in base.exposures]
    assert [e.index for e in plan.exposures] == list(range(len(plan.exposures)))
    assert plan.duration_s == base.duration_s


def test_tracking_before_each_group_ends_just_before_it() -> None:
    plan = make_plan(loads(in_situ("track_groups: true")))
    images = plan.images
    starts = [e for e in images if not e.tracking]
    tracked = 0
    for before, e in zip(images, images[1:]):
        if before.tracking:
            assert not e.tracking
            assert e.t_start_s - before.t_end_s == pytest.approx(DEAD_S + TRACK_LEAD_S)
            tracked += 1
    assert tracked == len(plan.tracking) > 0
    # the groups of the CV (every 300 s and the vertex image) all get one; the run's first group
    # (nothing to compare with) and the CV's first (back to back after the rest's images) do not
    assert len(plan.tracking) == sum(1 for e in starts if e.window in ("low-loss", "ti-l-o-k")) - 2 - 1


def test_count_beam_time_and_dose_apart_and_in_the_totals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = make_plan(loads(in_situ()))
    plan = make_plan(loads(in_situ("track_every: 10 min")))
    rate = plan.protocol.beam.dose_rate_e_per_m2_s
    n = len(plan.tracking)
    assert plan.tracking_beam_on_s == pytest.approx(n * 0.05)
    assert plan.tracking_dose_e_per_m2 == pytest.approx(n * 0.05 * rate)
    assert plan.beam_on_s == pytest.approx(base.beam_on_s + n * 0.05)
    assert plan.dose_e_per_m2 == pytest.approx(base.dose_e_per_m2 + plan.tracking_dose_e_per_m2)
    assert plan.exposures_per_window() == base.exposures_per_window()  # tracking frames not counted there
    s = plan.summary()
    assert s["tracking"] == {"window": "drift-tracking", "settings_of": "low-loss", "exposures": n, "exposure_s": 0.05,
                             "beam_on_s": pytest.approx(n * 0.05), "dose_e_per_A2": pytest.approx(n * 0.05 * rate / E_A2)}
    assert "tracking" not in base.summary()
    path = tmp_path / "p.yaml"
    path.write_text(in_situ("track_every: 10 min"), encoding="utf-8")
    capsys.readouterr()
    assert cli.main(["plan", str(path)]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "drift tracking" in out and f"{n} x 0.05 s" in out
    assert cli.main(["plan", str(path), "--json"]) == cli.EXIT_OK
    assert json.loads(capsys.readouterr().out)["tracking"]["exposures"] == n


def test_a_protocol_whose_tracking_passes_the_dose_budget_is_refused_in_one_line(tmp_path: Path,
                                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    base = make_plan(loads(in_situ()))
    budget = base.dose_e_per_m2 / E_A2 + 1.0  # 1 e/Å² to spare: 11 frames of 0.05 s give 5.5
    text = in_situ("track_every: 10 min", **{"max_total_dose: 50000 e/Å^2": f"max_total_dose: {budget:.6f} e/Å^2"})
    with pytest.raises(ProtocolError, match=r"^safety.max_total_dose: .* 11 drift-tracking exposures 5.46\d* e/Å\^2 of it"):
        make_plan(loads(text))
    make_plan(loads(text.replace("track_every: 10 min", "track_every: 60 min")))  # 2 frames fit
    path = tmp_path / "p.yaml"
    path.write_text(text, encoding="utf-8")
    capsys.readouterr()
    assert cli.main(["plan", str(path)]) == cli.EXIT_BAD_INPUT
    _, err = capsys.readouterr()
    assert len(err.strip().split("\n")) == 1 and "safety.max_total_dose" in err and "Traceback" not in err


def test_the_tracking_dose_cap() -> None:
    with pytest.raises(ProtocolError, match=r"drift.track_max_dose: the 11 drift-tracking exposures deliver 5.46\d* e/Å\^2, "
                       r"over the cap of 5 e/Å\^2"):
        make_plan(loads(in_situ("track_every: 10 min", "track_max_dose: 5 e/Å^2")))
    make_plan(loads(in_situ("track_every: 10 min", "track_max_dose: 6 e/Å^2")))


@pytest.mark.parametrize(("lines", "message"), [
    (("track_exposure: 0.1 s", "track_every: 10 min"), "drift.track_exposure: 0.1 s is longer than one low-loss frame (0.05 s"),
    (("track_every: 0.5 s",), "drift.track_every: "),
    (("track_every: 10 min", "track_groups: true"), "drift.track_groups: give drift.track_every or drift.track_groups, not both"),
    (("track_every: 10 min", "track_exposure: 1e-5 s"), "drift.track_exposure: "),
    (("track_every: 10 min", "track_max_dose: -1 e/Å^2"), "drift.track_max_dose: "),
    (("max_stage_travel: 1 parsec",), "drift.max_stage_travel: "),
    (("use_stage: 1",), "drift.use_stage: "),
])
def test_bad_tracking_settings_are_one_line_naming_the_field(lines: tuple[str, ...], message: str, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(in_situ(*lines), encoding="utf-8")
    capsys.readouterr()
    assert cli.main(["validate", str(path)]) == cli.EXIT_BAD_INPUT
    _, err = capsys.readouterr()
    errs = err.strip().split("\n")
    assert len(errs) == 1 and message in errs[0] and "Traceback" not in err, errs


def test_tracking_needs_drift_on() -> None:
    text = in_situ("track_every: 10 min", **{"  mode: correct": "  mode: \"off\""})
    with pytest.raises(ProtocolError, match="drift.track_every: tracking exposures need drift.mode measure or correct"):
        loads(text)
