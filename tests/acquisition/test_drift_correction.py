"""The drift correction loop (acquisition/drift_control.py) against a fake microscope: dead band,
limit at max_shift, refusal. Whole runs: tests/acquisition/test_drift_in_situ.py (in-situ-lasgtp
with and without correction, slow) and tests/faults/test_drift_refusal.py (a refusal over the wire).
"""

from __future__ import annotations

import numpy as np
import pytest

PIXEL_M = 5.70e-9
ACTION = 6  # position of the action in a drift row (RunFile.append_drift's arguments)

# -- the controller against a fake microscope: dead band, limit, refusal -----------------------------


class _Lens:
    def __init__(self, limit_m: float = 2e-6, has_shift: bool = True) -> None:
        self.shift = (0.0, 0.0)
        self.limit_m = limit_m
        self.has_shift = has_shift

    @property
    def image_shift_m(self) -> tuple[float, float]:
        if not self.has_shift:
            raise NotImplementedError("no image shift")
        return self.shift

    def set_image_shift(self, x_m: float, y_m: float) -> None:
        from insitem.drivers.errors import InstrumentError

        if abs(y_m) > self.limit_m:
            raise InstrumentError(-222, "Data out of range", "fake tem")
        self.shift = (x_m, y_m)


class _Stage:
    """A stage with travel +-`limit_m` along y that reaches its target with an error `miss_m`
    after `polls` queries of `moving`."""

    def __init__(self, limit_m: float = 1e-3, miss_m: float = 0.0, polls: int = 0) -> None:
        self.y_m = 3e-6  # where the operator left it
        self.limit_m, self.miss_m, self.polls = limit_m, miss_m, polls
        self.moves: list[float] = []
        self._left = 0

    @property
    def position(self) -> object:
        from insitem.drivers.interfaces import StagePosition

        return StagePosition(1e-6, self.y_m, 0.0, 0.0)

    def move_to(self, x_m: float | None = None, y_m: float | None = None, z_m: float | None = None,
                alpha_rad: float | None = None) -> None:
        from insitem.drivers.errors import InstrumentError

        assert x_m is None and z_m is None and alpha_rad is None  # only y moves
        assert y_m is not None
        if abs(y_m) > self.limit_m:
            raise InstrumentError("stage y out of range", "fake tem", code=-222)
        self.moves.append(y_m)
        self.y_m = y_m + self.miss_m
        self._left = self.polls

    @property
    def moving(self) -> bool:
        self._left -= 1
        return self._left >= 0


class _Scope:
    def __init__(self, lens: _Lens, stage: _Stage | None = None) -> None:
        self.lens = lens
        self._stage = stage

    @property
    def stage(self) -> _Stage:
        if self._stage is None:
            raise NotImplementedError("_Scope has no stage control")
        return self._stage


def _controller(pauses: list[float] | None = None, **config: object) -> tuple[object, list[tuple], list[tuple]]:
    from insitem.acquisition.drift_control import DriftController
    from insitem.protocols.schema import DriftCorrection

    rows: list[tuple] = []
    events: list[tuple] = []
    x = np.arange(100) * PIXEL_M
    ctl = DriftController(DriftCorrection(mode="correct", **config), "w", x,
                          record_io=lambda *a: rows.append(a), record=lambda *a: rows.append(a),
                          event=lambda *a: events.append(a), pause=None if pauses is None else pauses.append)
    return ctl, rows, events


def _image(shift_m: float) -> np.ndarray:
    from scipy.special import ndtr

    x = np.arange(100) * PIXEL_M
    return (1000.0 + 3000.0 * ndtr((x - 250e-9 - shift_m) / 8e-9))[:, None] * np.ones((1, 4))


def test_within_the_dead_band_nothing_moves() -> None:
    ctl, rows, _ = _controller(dead_band="5.7 nm")
    scope = _Scope(_Lens())
    ctl.observe("w", 0, 0.0, _image(0.0))
    ctl.apply(scope, 1.0)
    ctl.observe("w", 1, 300.0, _image(3e-9))
    ctl.apply(scope, 301.0)
    assert scope.lens.shift == (0.0, 0.0)
    assert rows[-1][ACTION] == "within-dead-band"
    assert rows[-1][3] == pytest.approx(3e-9, abs=0.5e-9)


def test_a_drift_is_taken_back_and_limited_at_max_shift_without_the_stage() -> None:
    ctl, rows, events = _controller(max_shift="20 nm", use_stage=False)
    scope = _Scope(_Lens())
    ctl.observe("w", 0, 0.0, _image(0.0))
    ctl.apply(scope, 1.0)
    ctl.observe("w", 1, 300.0, _image(12e-9))
    ctl.apply(scope, 300.0)
    assert scope.lens.shift[1] == pytest.approx(-12e-9, abs=0.5e-9)
    assert rows[-1][ACTION] == "corrected"
    ctl.observe("w", 2, 600.0, _image(12e-9 + 30e-9 - 12e-9))  # 30 nm more drift, 12 nm taken back
    ctl.apply(scope, 600.0)
    assert scope.lens.shift[1] == pytest.approx(-20e-9)
    assert rows[-1][ACTION] == "limited" and any("max_shift" in e[1] for e in events)


@pytest.mark.faults
@pytest.mark.parametrize("on_refusal", ["continue", "stop"])
def test_a_refused_correction_is_recorded_and_the_run_goes_on_or_stops(on_refusal: str) -> None:
    from insitem.drivers.errors import SafetyLimitError

    ctl, rows, events = _controller(on_refusal=on_refusal)
    scope = _Scope(_Lens(limit_m=5e-9))  # the microscope refuses shifts beyond 5 nm (-222)
    ctl.observe("w", 0, 0.0, _image(0.0))
    ctl.apply(scope, 1.0)
    ctl.observe("w", 1, 300.0, _image(20e-9))
    if on_refusal == "stop":
        with pytest.raises(SafetyLimitError, match="drift correction refused"):
            ctl.apply(scope, 300.0)
    else:
        ctl.apply(scope, 300.0)
        assert any("measuring only" in e[1] for e in events)
        ctl.observe("w", 2, 600.0, _image(25e-9))
        ctl.apply(scope, 600.0)  # no further attempt
    assert scope.lens.shift == (0.0, 0.0)
    assert [r[ACTION] for r in rows].count("refused") == 1


def test_a_microscope_without_image_shift_is_a_refusal() -> None:
    ctl, rows, events = _controller()
    scope = _Scope(_Lens(has_shift=False))
    ctl.observe("w", 0, 0.0, _image(0.0))
    ctl.observe("w", 1, 300.0, _image(20e-9))
    ctl.apply(scope, 300.0)
    assert rows[-1][ACTION] == "refused" and any("no image shift" in e[1] for e in events)


# -- the stage beyond max_shift -----------------------------------------------------------------------


def test_beyond_max_shift_the_stage_moves_and_the_image_shift_returns_to_its_start() -> None:
    """12 nm then 30 nm more of drift with a 20 nm image-shift range: the first is image shift, the
    second takes the shift to -30 nm, so the stage moves by -30 nm (the whole correction from the
    shift's start) and the shift returns to 0; the stage is waited for and read back."""
    pauses: list[float] = []
    ctl, rows, events = _controller(pauses, max_shift="20 nm")
    stage = _Stage(polls=3)
    scope = _Scope(_Lens(), stage)
    ctl.observe("w", 0, 0.0, _image(0.0))
    ctl.observe("w", 1, 300.0, _image(12e-9))
    ctl.apply(scope, 300.0)
    assert scope.lens.shift[1] == pytest.approx(-12e-9, abs=0.5e-9) and not stage.moves
    ctl.observe("w", 2, 600.0, _image(18e-9))  # 30 nm more drift, 12 nm of it taken back
    ctl.apply(scope, 600.0)
    assert scope.lens.shift == (0.0, pytest.approx(0.0))
    assert stage.moves == [pytest.approx(3e-6 - 30e-9, abs=1e-9)]
    assert len(pauses) == 3  # waited while the stage reported moving
    actions = [r[ACTION] for r in rows]
    assert actions[-2:] == ["stage-read", "stage"]
    assert rows[-2][9] == pytest.approx(3e-6) and rows[-1][9] == pytest.approx(stage.y_m)  # stage_y_m read back
    assert rows[-1][5] == 0.0  # the image shift recentred
    # the next image, taken where the specimen now sits, is searched near it: drift goes on from there
    ctl.observe("w", 3, 900.0, _image(2e-9))
    ctl.apply(scope, 900.0)
    assert [r[ACTION] for r in rows][-2:] == ["measured", "within-dead-band"]
    assert rows[-1][3] == pytest.approx(2e-9, abs=0.5e-9)


def test_a_stage_that_misses_its_target_is_booked_where_it_went() -> None:
    ctl, rows, _ = _controller(max_shift="20 nm")
    stage = _Stage(miss_m=4e-9)  # lands 4 nm beyond the target: within what the image shift can make up
    scope = _Scope(_Lens(), stage)
    ctl.observe("w", 0, 0.0, _image(0.0))
    ctl.observe("w", 1, 300.0, _image(22e-9))  # registered from one image to the next: up to ~4 pixels
    ctl.apply(scope, 300.0)
    assert rows[-1][ACTION] == "stage" and rows[-1][9] == pytest.approx(3e-6 - 22e-9 + 4e-9, abs=1e-9)
    # the image now sits 4 nm beyond the first image's position: the next estimate near there
    ctl.observe("w", 2, 600.0, _image(4e-9))
    ctl.apply(scope, 600.0)
    assert rows[-1][ACTION] == "within-dead-band"


@pytest.mark.faults
@pytest.mark.parametrize("on_refusal", ["continue", "stop"])
@pytest.mark.parametrize("why", ["out of range", "travel", "no stage"])
def test_a_refused_stage_move_follows_on_refusal(on_refusal: str, why: str) -> None:
    from insitem.drivers.errors import SafetyLimitError

    ctl, rows, events = _controller(max_shift="20 nm", on_refusal=on_refusal, max_stage_travel="21 nm")
    stage = None if why == "no stage" else _Stage(limit_m=1e-9 if why == "out of range" else 1e-3)
    scope = _Scope(_Lens(), stage)
    ctl.observe("w", 0, 0.0, _image(0.0))
    ctl.observe("w", 1, 300.0, _image(22e-9))  # 22 nm: beyond the shift's 20 nm and the travel's 21 nm
    if on_refusal == "stop":
        with pytest.raises(SafetyLimitError, match="drift correction refused.*on_refusal: stop"):
            ctl.apply(scope, 300.0)
    else:
        ctl.apply(scope, 300.0)
        assert any("measuring only" in e[1] for e in events)
    assert scope.lens.shift == (0.0, 0.0)  # nothing moved
    assert stage is None or stage.y_m == 3e-6
    assert [r[ACTION] for r in rows].count("refused") == 1
    if why == "travel":
        assert "max_stage_travel" in str(events) or on_refusal == "stop"
