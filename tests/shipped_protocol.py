"""Shipped protocols as text with some lines changed, for tests that need other numbers.

`variant("loopback-hold", ("duration: 15 s", "duration: 60 s"))` is the shipped file with each
(old, new) pair replaced; `insitem.protocols.loader.loads` then validates it like any protocol.
"""

from __future__ import annotations

from insitem.protocols.loader import resolve


def variant(name: str, *replacements: tuple[str, str], steps: str | None = None) -> str:
    """Text of shipped protocol `name` with every `old` replaced by `new` (each `old` must occur
    exactly once, so a test never runs the unchanged protocol by mistake); `steps`, when given,
    replaces everything from the `steps:` line on."""
    text = resolve(name).read_text(encoding="utf-8")
    for old, new in replacements:
        n = text.count(old)
        if n != 1:
            raise ValueError(f"{name}: {old!r} occurs {n} times in the shipped text, expected once")
        text = text.replace(old, new)
    if steps is not None:
        head, sep, _ = text.partition("\nsteps:\n")
        if not sep:
            raise ValueError(f"{name}: no 'steps:' line in the shipped text")
        text = head + "\n" + steps
    return text
