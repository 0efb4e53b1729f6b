"""The one exception tree used inside the service; the API edge turns it into userErrors."""

from __future__ import annotations


class CloudOpsError(Exception):
    """Base of every error the control plane raises on purpose."""


class StepError(CloudOpsError):
    """A step failed in a way that a retry may fix."""


class PermanentStepError(StepError):
    """A step failed in a way no retry can fix (bad artifact, missing object): fail at once."""


class TaskCancelled(CloudOpsError):
    """Raised inside a running step when the task was cancelled."""


class LeaseLost(CloudOpsError):
    """The worker no longer owns the task: its writes are fenced off and it must stop."""


class DatabaseUnavailable(CloudOpsError):
    """The database could not be reached; driver errors are translated to this at one place."""
