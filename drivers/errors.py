"""One error hierarchy for every device, real or simulated, and for protocol problems.

The runner catches `InsitemError` subclasses to decide between retrying, stopping safely and
reporting bad input; the CLI turns any of them into a one-line message and a non-zero exit.
"""

from __future__ import annotations


class InsitemError(Exception):
    """Base of every error insitem raises on purpose."""


class DeviceError(InsitemError):
    """A device-level problem. `resource` names the instrument (VISA resource or 'sim:...')."""

    def __init__(self, message: str, resource: str | None = None) -> None:
        self.resource = resource
        super().__init__(f"{resource}: {message}" if resource else message)


class CommunicationError(DeviceError):
    """The transport failed: connection refused or dropped, garbled or truncated reply."""


class DeviceTimeoutError(CommunicationError):
    """The instrument did not answer within its timeout."""


class InstrumentError(DeviceError):
    """The instrument reported an error (SCPI error queue, camera return code, TEM error)."""

    def __init__(self, message: str, resource: str | None = None, code: int | None = None) -> None:
        self.code = code
        super().__init__(message, resource)


class WrongInstrumentError(DeviceError):
    """The instrument behind a resource is not the model the driver expects."""


class ComplianceError(DeviceError):
    """The source hit its current compliance (limit) more often than allowed."""


class SafetyLimitError(InsitemError):
    """A requested action would exceed a protocol safety limit (voltage, dose, exposure)."""


class ProtocolError(InsitemError):
    """A protocol file is invalid. The message names the file and the field or line."""


class ResourceError(InsitemError):
    """A resource string is malformed or names no known backend."""


class UsageError(InsitemError):
    """A command was given input it cannot use (a file that is not a run file, a bad option value):
    the command line exits with status 2, like a protocol error."""
