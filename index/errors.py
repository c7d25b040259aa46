"""Errors raised by index/: the web layer maps each to one HTTP status."""


class NotFoundError(Exception):
    """A collection or item that does not exist (HTTP 404)."""


class ConflictError(Exception):
    """A name already taken or a write that clashes with stored state (HTTP 409)."""


class OutOfScopeError(Exception):
    """A request outside what its API key may do (HTTP 403)."""
