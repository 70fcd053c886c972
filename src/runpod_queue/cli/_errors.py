"""The one error the CLI raises itself: a usage problem, reported as one line on stderr with exit 2."""

from __future__ import annotations

from runpod_queue.errors import ConfigurationError

__all__ = ["UsageProblem"]


class UsageProblem(ConfigurationError):
    """Bad input or configuration found by the CLI itself (INPUT that is not a JSON object, an option out
    of range, no API key for a remote URL): one line on stderr, exit 2.

    A ``ConfigurationError``, so that every error this package raises on purpose is a ``RunpodQueueError``
    (code that drives the CLI in-process catches one base class)."""
