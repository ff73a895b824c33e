"""The commands' terminal output: one console for results (stdout), one for messages (stderr).

Plain text (no markup, highlighting or emoji), so a file name or a protocol value is printed as
written. Shared by every command module, which is why it lives in a module of its own.
"""

from __future__ import annotations

from rich.console import Console

console = Console(highlight=False, markup=False, emoji=False)
err_console = Console(stderr=True, highlight=False, markup=False, emoji=False)
