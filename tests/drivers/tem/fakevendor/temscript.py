"""A stand-in for the `temscript` package, shaped like its `BaseMicroscope` (niermann/temscript,
temscript/base_microscope.py and null_microscope.py: method names, arguments, units). Used by
subprocess tests that start `insitem bridge tem --vendor temscript` without a microscope.

State lives in memory, or - when $FAKE_TEMSCRIPT_STATE names a file - in that JSON file, written
atomically on every change, so a test can read the blanker's state after the bridge process
has exited. Magnification steps: index * 10000, as temscript's NullMicroscope.
"""

from __future__ import annotations

import json
import os
from typing import Any

_DEFAULTS: dict[str, Any] = {
    "blanked": True,
    "projection_mode": "IMAGING",
    "magnification_index": 10,
    "defocus": 0.0,
    "stage": {"x": 0.0, "y": 0.0, "z": 0.0, "a": 0.0, "b": 0.0},
    "image_shift": [0.0, 0.0],
    "beam_shift": [0.0, 0.0],
}
STAGE_LIMITS = {"x": (-1e-3, 1e-3), "y": (-1e-3, 1e-3), "z": (-0.3e-3, 0.3e-3), "a": (-0.5236, 0.5236), "b": (-0.5236, 0.5236)}


class Microscope:
    def __init__(self) -> None:
        self._path = os.environ.get("FAKE_TEMSCRIPT_STATE")
        self._state = json.loads(json.dumps(_DEFAULTS))
        self._save()

    def _save(self) -> None:
        if self._path:
            tmp = self._path + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(self._state, f)
            os.replace(tmp, self._path)

    def _put(self, key: str, value: Any) -> None:
        self._state[key] = value
        self._save()

    def get_family(self) -> str:
        return "NULL"

    def get_microscope_id(self) -> str:
        return "fake01"

    def get_version(self) -> str:
        return "2.0.0"

    def get_voltage(self) -> float:
        return 300.0

    def get_beam_blanked(self) -> bool:
        return bool(self._state["blanked"])

    def set_beam_blanked(self, mode: bool) -> None:
        self._put("blanked", bool(mode))

    def get_projection_mode(self) -> str:
        return str(self._state["projection_mode"])

    def set_projection_mode(self, mode: str) -> None:
        self._put("projection_mode", mode)

    def get_magnification_index(self) -> int:
        return int(self._state["magnification_index"])

    def set_magnification_index(self, index: int) -> None:
        self._put("magnification_index", int(index))

    def get_indicated_magnification(self) -> float:
        return self._state["magnification_index"] * 10000.0 if self._state["projection_mode"] == "IMAGING" else 0.0

    def get_defocus(self) -> float:
        return float(self._state["defocus"])

    def set_defocus(self, value: float) -> None:
        self._put("defocus", float(value))

    def get_stage_status(self) -> str:
        return "READY"

    def get_stage_limits(self) -> dict[str, tuple[float, float]]:
        return dict(STAGE_LIMITS)

    def get_stage_position(self) -> dict[str, float]:
        return dict(self._state["stage"])

    def set_stage_position(self, pos: dict[str, float] | None = None, method: str | None = None,
                           speed: float | None = None, **kw: float) -> None:
        new = dict(self._state["stage"])
        new.update(pos or {})
        new.update(kw)
        for k, v in new.items():  # temscript's NullMicroscope clamps to the limits
            lo, hi = STAGE_LIMITS[k]
            new[k] = max(lo, min(hi, float(v)))
        self._put("stage", new)

    def get_image_shift(self) -> tuple[float, float]:
        x, y = self._state["image_shift"]
        return (x, y)

    def set_image_shift(self, pos: Any) -> None:
        self._put("image_shift", [float(pos[0]), float(pos[1])])

    def get_beam_shift(self) -> tuple[float, float]:
        x, y = self._state["beam_shift"]
        return (x, y)

    def set_beam_shift(self, shift: Any) -> None:
        self._put("beam_shift", [float(shift[0]), float(shift[1])])
