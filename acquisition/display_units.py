"""Units for showing measured values to people: a current in pA, nA, uA or mA by its size.

Shared by the figures and the analysis reports (neither imports the other for it).
"""

from __future__ import annotations


def current_scale(max_abs_A: float) -> tuple[float, str]:
    """(divisor, unit) that puts a current of magnitude `max_abs_A` in pA, nA, µA or mA."""
    for scale, unit in ((1e-3, "mA"), (1e-6, "µA"), (1e-9, "nA")):
        if max_abs_A >= scale:
            return scale, unit
    return 1e-12, "pA"
