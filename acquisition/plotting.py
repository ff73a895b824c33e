"""Matplotlib for figure files: the Agg backend (no display on the machines this runs on) and one
way to finish and save a figure, shared by `insitem show` and `insitem analyze`'s figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: resolution of every PNG insitem writes
DPI = 110


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (imported on first use: it takes a second)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> Path:
    """Lay out `fig`, write it to `path` as PNG and release it."""
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    pyplot().close(fig)
    return path
