"""The project's one root exception type.

Every error that ama-stream raises on purpose derives from :class:`AmaStreamError`, so a caller
(the CLI, a worker loop, a test) can tell "ours, with a message meant for a person" from a bug.
Subclasses live next to the code that raises them and carry the fields a caller needs.
"""

from __future__ import annotations


class AmaStreamError(Exception):
    """Root of every deliberate ama-stream error."""


class ConfigError(AmaStreamError):
    """The configuration is invalid or incomplete."""


class ServiceError(AmaStreamError):
    """A service a job depends on (Kafka, Redis, the device) cannot do its part right now.

    Not caused by the records being processed, so the worker never dead-letters a record for
    it: it waits, or, when ``fatal`` (wrong credentials, missing permissions), stops with this
    message, since waiting cannot help.
    """

    def __init__(self, message: str, *, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal
