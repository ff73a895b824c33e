"""Checks shared by the runner tests on the simulated rig (the tests are not a package)."""

from __future__ import annotations

from pathlib import Path

from insitem.acquisition.rig import SimRigBundle
from insitem.acquisition.runfile_read import RunFileReader
from insitem.acquisition.runner import RunResult


def assert_ended_safely(result: RunResult, bundle: SimRigBundle, path: Path, status: str,
                        reason: tuple[str, ...] = (), file_reason: str = "") -> None:
    """The run ended with `status` and every part of `reason` in its reason, left the simulated rig
    safe (as the world sees it: potentiostat output off, beam blanked) and closed its file with
    that status and `file_reason` in the file's reason."""
    assert result.status == status, result.reason
    assert all(part in result.reason for part in reason), result.reason
    assert bundle.world.applied_V is None, "potentiostat output must be off (relay open)"
    assert bundle.world.optics.blanked, "beam must be blanked"
    with RunFileReader(path) as r:
        assert r.status == status and file_reason in r.status_reason
