"""Errors raised by index/: the web layer maps each to one HTTP status."""


class NotFoundError(Exception):
    """A collection or item that does not exist (HTTP 404)."""


class ConflictError(Exception):
    """A name already taken or a write that clashes with stored state (HTTP 409)."""


class SpaceChangedError(ConflictError):
    """A write of features of a model the collection no longer uses: a migration switched
    it meanwhile (HTTP 409; sent again, the write is encoded with the new model)."""


class JobEndedError(ConflictError):
    """A job's step found the job no longer running (cancelled by a client, or taken back)."""


class OutOfScopeError(Exception):
    """A request outside what its API key may do (HTTP 403)."""
