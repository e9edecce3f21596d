"""The persistmemo exception tree.

Every error persistmemo raises on purpose derives from :class:`PersistmemoError`::

    PersistmemoError
    ├── KeyEncodingError (also TypeError)    an argument has no canonical encoding
    ├── SerializationError                   a result cannot be encoded by the codec
    ├── DecodeError                          stored bytes are corrupt, foreign or forged (a miss)
    ├── BackendError                         wraps redis / sqlite / OS errors (raise ... from exc)
    │   └── BackendUnavailable               the store cannot be reached right now
    │       └── StoreDisabled (also ConfigurationError)  the store must not or cannot be used
    ├── LockTimeout                          waited longer than allowed for another worker
    └── ConfigurationError (also ValueError) bad URL, unknown option, bad option value

Backend errors are mapped to :class:`BackendError` at one boundary (each backend module); by
default the decorator fails open: it logs, counts, and returns the function's own result.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "BackendUnavailable",
    "ConfigurationError",
    "DecodeError",
    "KeyEncodingError",
    "LockTimeout",
    "PersistmemoError",
    "SerializationError",
    "StoreDisabled",
]


class PersistmemoError(Exception):
    """Base class of every error raised by persistmemo."""


class KeyEncodingError(PersistmemoError, TypeError):
    """An argument has no canonical, stable encoding, so no safe key can be built.

    Attributes:
        parameter: the parameter name (or path inside it, e.g. ``"x[2].name"``).
        type_name: the fully qualified name of the offending type.
    """

    def __init__(self, message: str, *, parameter: str = "", type_name: str = "") -> None:
        super().__init__(message)
        self.parameter = parameter
        self.type_name = type_name


class SerializationError(PersistmemoError):
    """A value cannot be encoded by the configured serializer."""


class DecodeError(PersistmemoError):
    """Stored bytes could not be verified or decoded; persistmemo treats them as a miss."""


class BackendError(PersistmemoError):
    """A storage backend failed (the original exception is chained as ``__cause__``)."""


class BackendUnavailable(BackendError):
    """The backend cannot be reached (connection refused, timed out, or circuit open)."""


class LockTimeout(PersistmemoError):
    """Waited longer than ``lock_wait`` for another worker's computation."""


class ConfigurationError(PersistmemoError, ValueError):
    """A location, URL or option is invalid."""


class StoreDisabled(BackendUnavailable, ConfigurationError):
    """The store is unusable for this process (an unsafe or unusable cache directory).

    With ``fail_open`` (the default) the cache stops using the store for the rest of the process
    after one warning whose message names the reason and the fix; results are still returned.
    """
