"""The drift correction loop (acquisition/drift_control.py) against a fake microscope: dead band,
limit at max_shift, refusal. Whole runs: tests/acquisition/test_drift_in_situ.py (in-situ-lasgtp
with and without correction, slow) and tests/faults/test_drift_refusal.py (a refusal over the wire).
"""

from __future__ import annotations

import numpy as np
import pytest

PIXEL_M = 5.70e-9

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


class _Scope:
    def __init__(self, lens: _Lens) -> None:
        self.lens = lens


def _controller(**config: object) -> tuple[object, list[tuple], list[tuple]]:
    from insitem.acquisition.drift_control import DriftController
    from insitem.protocols.schema import DriftCorrection

    rows: list[tuple] = []
    events: list[tuple] = []
    x = np.arange(100) * PIXEL_M
    ctl = DriftController(DriftCorrection(mode="correct", **config), "w", x,
                          record_io=lambda *a: rows.append(a), record=lambda *a: rows.append(a),
                          event=lambda *a: events.append(a))
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
    assert rows[-1][-1] == "within-dead-band"
    assert rows[-1][3] == pytest.approx(3e-9, abs=0.5e-9)


def test_a_drift_is_taken_back_and_limited_at_max_shift() -> None:
    ctl, rows, events = _controller(max_shift="20 nm")
    scope = _Scope(_Lens())
    ctl.observe("w", 0, 0.0, _image(0.0))
    ctl.apply(scope, 1.0)
    ctl.observe("w", 1, 300.0, _image(12e-9))
    ctl.apply(scope, 300.0)
    assert scope.lens.shift[1] == pytest.approx(-12e-9, abs=0.5e-9)
    assert rows[-1][-1] == "corrected"
    ctl.observe("w", 2, 600.0, _image(12e-9 + 30e-9 - 12e-9))  # 30 nm more drift, 12 nm taken back
    ctl.apply(scope, 600.0)
    assert scope.lens.shift[1] == pytest.approx(-20e-9)
    assert rows[-1][-1] == "limited" and any("max_shift" in e[1] for e in events)


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
    assert [r[-1] for r in rows].count("refused") == 1


def test_a_microscope_without_image_shift_is_a_refusal() -> None:
    ctl, rows, events = _controller()
    scope = _Scope(_Lens(has_shift=False))
    ctl.observe("w", 0, 0.0, _image(0.0))
    ctl.observe("w", 1, 300.0, _image(20e-9))
    ctl.apply(scope, 300.0)
    assert rows[-1][-1] == "refused" and any("no image shift" in e[1] for e in events)
