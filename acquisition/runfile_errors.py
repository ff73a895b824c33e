"""The run file's errors: shared by the writer (`runfile`), the safe opener (`h5open`) and the
reader (`runfile_read`), so none of them has to import another for its exceptions."""

from __future__ import annotations

from insitem.drivers.errors import InsitemError


class RunFileError(InsitemError):
    """The run file cannot be created, written, reopened or read as asked."""


class RunFileUnreadable(RunFileError):
    """The file given is not a usable run file: missing, damaged, truncated, foreign, incomplete,
    or not accessible as the command needs (bad input: `insitem` exits 2)."""

    bad_input = True
