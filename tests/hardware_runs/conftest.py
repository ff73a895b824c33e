"""Shipped protocols on the wire: the helper module `paced_run` is importable from the tests here."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # paced_run (the tests are not a package)
