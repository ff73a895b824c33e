"""The run file's drift record read back: the specimen's drift, the correction and the residual
against time, as numbers (`insitem analyze`'s summary) and as a figure beside the potential
(`insitem show`'s ``drift-time.png``).

The drift table (`RunFileReader.drift()`, docs/drift.md) holds one ``measured`` row per tracked
image (a window's own image, or a drift-tracking frame: column ``kind``, with its dose) - the
displacement of the specimen's image over the slit since the first tracked image, which includes
the image shift and stage moved since - and one row per action of the correction loop
(``shift-read``: the image shift the loop started from; ``stage-read``: the stage y it found;
``corrected``/``limited``: the shift set; ``stage``: the stage moved and the shift recentred;
``within-dead-band``, ``refused``). From them, per tracked image:

- residual: where the image sat relative to the first image (what the analysis of that image sees);
- correction: how far the image shift and the stage in force had taken the image back (minus
  their moves since the loop started);
- specimen drift: residual + correction (the drift that would have been seen uncorrected).

With tracking frames the rows are the frames' (after the window's first image, the reference): a
frame taken just before a group, as `drift.track_groups` places it, shows the drift since the last
correction, which the correction right after it takes back before the group is exposed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from insitem.protocols.units import E_PER_A2

MOVES = ("corrected", "limited", "stage")


@dataclass(frozen=True)
class DriftSeries:
    window: str
    t_s: np.ndarray  # start of each tracked image (rig clock)
    residual_m: np.ndarray  # displacement of the image over the slit since the first tracked image
    sigma_m: np.ndarray  # its 1-sigma uncertainty (0 for the first image: the reference)
    correction_m: np.ndarray  # drift taken back by the image shift and stage in force when the image was taken
    actions: dict[str, int]  # count of each action of the correction loop
    kinds: tuple[str, ...] = ()  # per tracked image: science | tracking
    tracking_dose_e_per_m2: float = 0.0  # the dose of the tracking frames measured
    stage_m: float = 0.0  # the stage's move along the slit since the loop read it (at the end)

    @property
    def drift_m(self) -> np.ndarray:
        """The specimen's own drift along the slit since the first tracked image."""
        return self.residual_m + self.correction_m

    def summary(self) -> dict[str, Any]:
        """Numbers for a JSON summary (m; None where there is no value)."""
        later = self.residual_m[1:]
        return {
            "window": self.window,
            "tracked_images": int(self.t_s.size),
            "specimen_drift_m": _num(self.drift_m[-1]),
            "max_specimen_drift_m": _num(np.max(np.abs(self.drift_m))),
            "correction_m": _num(self.correction_m[-1]),
            "residual_rms_m": _num(math.sqrt(float(np.mean(later**2)))) if later.size else None,
            "residual_max_m": _num(float(np.max(np.abs(later)))) if later.size else None,
            "median_sigma_m": _num(float(np.median(self.sigma_m[1:]))) if later.size else None,
            "actions": self.actions,
            "tracking_frames": sum(k == "tracking" for k in self.kinds),
            "tracking_dose_e_per_A2": self.tracking_dose_e_per_m2 / E_PER_A2,
            "stage_m": self.stage_m,
        }


def _num(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _moved_in_force(table: dict[str, np.ndarray], t_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """At each time of `t_s`: (the image shift's move since the `shift-read` row, the stage's move
    since the `stage-read` row), both along the slit; zeros without moves. What is in force is the
    last move at or before the time (moves happen with the beam blanked just before an exposure
    starts); a refusal may follow a stage move whose image-shift recentring failed, so its row
    counts too (NaN: not read, unchanged). Files from before the stage column: no stage moves."""
    t = np.asarray(t_s, float)
    if "action" not in table or table["action"].size == 0:
        return np.zeros(t.shape), np.zeros(t.shape)
    actions = np.array([_text(a) for a in table["action"]])
    t_all = np.asarray(table["t_s"], float)
    shift_all = np.asarray(table["image_shift_m"], float)
    stage_all = np.asarray(table["stage_y_m"], float) if "stage_y_m" in table else np.full(t_all.size, np.nan)
    start = np.flatnonzero(actions == "shift-read")
    s0 = float(shift_all[start[0]]) if start.size else 0.0
    stage_start = np.flatnonzero(actions == "stage-read")
    g0 = float(stage_all[stage_start[0]]) if stage_start.size else 0.0
    moves = np.flatnonzero(np.isin(actions, (*MOVES, "refused")))
    k = np.searchsorted(t_all[moves], t, side="right") - 1
    pick = np.where(k >= 0, k, -1)
    shift_set = np.append(_carried(shift_all[moves], s0), s0)  # index -1: no move yet, the start
    stage_set = np.append(_carried(stage_all[moves], g0), g0)
    return shift_set[pick] - s0, stage_set[pick] - g0


def correction_in_force_m(table: dict[str, np.ndarray], t_s: np.ndarray) -> np.ndarray:
    """At each time of `t_s`: how far the image shift and the stage in force had taken the image
    back along the slit (minus their moves since the loop read them; 0 without moves)."""
    shift, stage = _moved_in_force(table, t_s)
    return -(shift + stage)


def drift_series(table: dict[str, np.ndarray]) -> DriftSeries | None:
    """The drift record as a series per tracked image; None without any measured row."""
    if "action" not in table or table["action"].size == 0:
        return None
    actions = np.array([_text(a) for a in table["action"]])
    measured = actions == "measured"
    if not measured.any():
        return None
    t_all = np.asarray(table["t_s"], float)
    n = t_all.size
    # files from before the tracking columns: science images, no dose
    kind_all = np.array([_text(k) for k in table["kind"]]) if "kind" in table else np.full(n, "science")
    dose_all = np.asarray(table["dose_e_per_m2"], float) if "dose_e_per_m2" in table else np.full(n, np.nan)
    t = t_all[measured]
    counts = {a: int(np.count_nonzero(actions == a)) for a in ("corrected", "limited", "stage", "within-dead-band", "refused")}
    tracked_dose = dose_all[measured & (kind_all == "tracking")]
    return DriftSeries(
        window=_text(table["window"][measured][0]),
        t_s=t,
        residual_m=np.asarray(table["measured_m"], float)[measured],
        sigma_m=np.asarray(table["sigma_m"], float)[measured],
        correction_m=correction_in_force_m(table, t),
        actions=counts,
        kinds=tuple(kind_all[measured].tolist()),
        tracking_dose_e_per_m2=float(np.nansum(tracked_dose)),
        stage_m=float(_moved_in_force(table, np.array([np.inf]))[1][0]),
    )


def _carried(values: np.ndarray, start: float) -> np.ndarray:
    """`values` with each NaN replaced by the value before it (`start` before the first)."""
    out = np.array(values, float)
    last = start
    for i, v in enumerate(out):
        if math.isfinite(v):
            last = v
        else:
            out[i] = last
    return out


def drift_summary(run_file: Path) -> dict[str, Any]:
    """``{"drift": {...}}`` for a run that tracked drift, else ``{}`` (for `insitem analyze`)."""
    from insitem.acquisition.runfile_read import RunFileReader

    with RunFileReader(run_file) as r:
        table = r.drift()
        series = drift_series(table)
        mids = [rec["t_start_s"] + 0.5 * rec["exposure_s"] for rec in (r.exposure_records(w) for w in r.windows)]
    if series is None:
        return {}
    out = series.summary()
    t_science = np.sort(np.concatenate(mids)) if mids else np.zeros(0)
    if out["tracking_frames"] and t_science.size:
        # tracking frames measure the drift built up since the last correction, just before the next
        # one: the residual the science exposures saw is the drift interpolated between the frames
        # less the correction in force at each exposure's mid-time
        seen = image_offset_m(table, t_science, float(series.t_s[0]))
        if seen is not None:
            out["residual_rms_m"] = _num(math.sqrt(float(np.mean(seen**2))))
            out["residual_max_m"] = _num(float(np.max(np.abs(seen))))
            out["residual_of"] = "science exposures (drift interpolated between tracking frames)"
    return {"drift": out}


def drift_line(summary: dict[str, Any]) -> str | None:
    """One line of `insitem analyze`'s text output for `drift_summary`'s numbers, or None."""
    d = summary.get("drift")
    if not d:
        return None

    def nm(v: float | None) -> str:
        return "-" if v is None else f"{round(v * 1e9, 1) + 0.0:.1f} nm"  # + 0.0: no "-0.0"

    return (f"drift ({d['window']}, {d['tracked_images']} images): specimen {nm(d['specimen_drift_m'])}, "
            f"corrected {nm(d['correction_m'])}, residual rms {nm(d['residual_rms_m'])} (max {nm(d['residual_max_m'])})"
            + (f"; stage moved {nm(d['stage_m'])} in {d['actions']['stage']} moves" if d["actions"].get("stage") else "")
            + (f"; {d['tracking_frames']} tracking frames, {d['tracking_dose_e_per_A2']:.3g} e/Å²" if d.get("tracking_frames") else "")
            + (f"; {d['actions']['refused']} correction refused" if d["actions"].get("refused") else ""))


def drift_figure(table: dict[str, np.ndarray], ec: dict[str, np.ndarray], title: str, path: Path) -> list[Path]:
    """``drift-time.png``: the potential over time above the specimen's drift, the correction and
    the residual (with its 1-sigma bars); nothing for a run without a drift record."""
    series = drift_series(table)
    if series is None:
        return []
    from insitem.acquisition.plotting import pyplot, save_figure

    plt = pyplot()
    fig, (ax_v, ax_d) = plt.subplots(2, 1, figsize=(9, 6), sharex=True, gridspec_kw={"height_ratios": [1, 2]})
    if ec["t_s"].size:
        ax_v.plot(ec["t_s"] / 3600, ec["voltage_V"], lw=0.7, color="0.4")
    ax_v.set_ylabel("cell potential (V)")
    t_h = series.t_s / 3600
    ax_d.plot(t_h, series.drift_m * 1e9, "o-", ms=3, lw=0.8, color="tab:blue", label="specimen drift (measured)")
    if np.any(series.correction_m != 0):
        ax_d.step(t_h, series.correction_m * 1e9, where="post", lw=0.9, color="tab:orange",
                  label="taken back by image shift" + (" and stage" if series.actions.get("stage") else ""))
    ax_d.errorbar(t_h, series.residual_m * 1e9, yerr=series.sigma_m * 1e9, fmt="s", ms=3, lw=0.8, color="k",
                  label="residual (image over the slit)")
    ax_d.axhline(0.0, color="0.6", lw=0.6, ls=":")
    ax_d.set_xlabel("time (h)")
    ax_d.set_ylabel("along the slit (nm)")
    ax_d.legend(loc="best", fontsize=8)
    refused = series.actions.get("refused", 0)
    ax_v.set_title(f"{title}: specimen drift tracked in {series.window}" + (" (a correction was refused)" if refused else ""))
    return [save_figure(fig, path)]


def image_offset_m(table: dict[str, np.ndarray], t_s: np.ndarray, reference_s: float) -> np.ndarray | None:
    """Where the specimen's image sat along the slit at each time of `t_s` relative to where it sat
    at `reference_s` (m), from the drift record: the specimen's drift interpolated in time between
    the tracked images, less the correction in force at each time. None without at least two
    tracked images. Used to place every image's profiles on the specimen's own coordinate."""
    series = drift_series(table)
    if series is None or series.t_s.size < 2:
        return None
    times = np.append(np.asarray(t_s, float), float(reference_s))
    at = np.interp(times, series.t_s, series.drift_m) - correction_in_force_m(table, times)
    return at[:-1] - at[-1]


__all__ = ["DriftSeries", "correction_in_force_m", "drift_figure", "drift_line", "drift_series", "drift_summary",
           "image_offset_m"]
