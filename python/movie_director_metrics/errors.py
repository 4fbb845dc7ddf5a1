"""The exception hierarchy: everything the engine raises is a `MetricsError`.

Bad input (values, names, windows, metrics, configuration, undecodable
bytes) also subclasses `ValueError`, so ``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "MetricsError",
    "InvalidValueError",
    "InvalidNameError",
    "InvalidWindowError",
    "InvalidMetricError",
    "InvalidConfigError",
    "DecodeError",
    "UnknownServiceError",
    "ServiceLimitError",
    "ClockError",
    "MonitorClosedError",
    "StorageError",
    "StorageLockedError",
    "ExportError",
    "StorageWarning",
    "ConfigError",
]


class MetricsError(Exception):
    """Base class of every error raised by movie_director_metrics."""


class InvalidValueError(MetricsError, ValueError):
    """A recorded value is NaN, infinite or out of range; nothing was recorded."""


class InvalidNameError(MetricsError, ValueError):
    """A service name is empty, longer than 64 characters or not printable."""


class InvalidWindowError(MetricsError, ValueError):
    """A window is not one of the named windows or a number of seconds in range."""


class InvalidMetricError(MetricsError, ValueError):
    """A metric or resource gauge name is unknown; the message lists the valid ones."""


class InvalidConfigError(MetricsError, ValueError):
    """Monitor or digest configuration that cannot work (tiers, limits, compression)."""


class DecodeError(MetricsError, ValueError):
    """Bytes that are not a valid serialized TDigest."""


class UnknownServiceError(MetricsError, LookupError):
    """No service of that name exists; the message lists the known ones."""


class ServiceLimitError(MetricsError):
    """The monitor already has its maximum number of services."""


class ClockError(MetricsError):
    """A manual-clock operation on a system clock, or time moving backwards."""


class MonitorClosedError(MetricsError):
    """The monitor was closed."""


class StorageError(MetricsError):
    """The history database cannot be used as asked (a newer schema, say)."""


class StorageLockedError(StorageError):
    """Another process owns the history database; the message names it.

    ``path`` is the database and ``owner`` the holder's description
    ("process 123 on host (since ...)"), for callers that word their own
    message."""

    def __init__(self, message: str, *, path: str = "", owner: str = "") -> None:
        super().__init__(message)
        self.path = path
        self.owner = owner


class ExportError(MetricsError, OSError):
    """An export could not be written (the path is unwritable, the disk full);
    no partial file is left behind."""


class StorageWarning(UserWarning):
    """History could not be read or written (corrupt file moved aside, disk
    full, read-only directory); recording goes on in memory."""


class ConfigError(MetricsError, ValueError):
    """A backends.toml (or backend list) that cannot work; the message names
    the file, the key and what was expected."""
