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
