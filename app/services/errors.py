"""Errors of the use cases, said in words and free of HTTP: app/errors.py gives each its
status and snake_case code (DOMAIN_ERRORS), as it does for index/'s and models/'.

Routers raise them too where they read a request's body: one error per meaning, wherever
it is found.
"""

from __future__ import annotations


class ServiceError(Exception):
    """A request the service will not carry out, and why (the message says what to do)."""


class InvalidInput(ServiceError):
    """A value that breaks a rule of the API: a blank text, metadata too deep, a vector of
    zeros, index settings that cannot index the collection's dimension."""


class Malformed(ServiceError):
    """A request that cannot be read: a multipart body that does not parse, a cursor this
    server did not give."""


class MalformedJson(ServiceError):
    """A body or a field that should be JSON and is not (or nests beyond what the parser
    reads)."""


class SpaceMismatch(ServiceError):
    """A query, item or aligner version of another embedding space than the collection's
    or this server's (invariant 4: spaces are never mixed)."""


class TooLarge(ServiceError):
    """An upload over MMR_MAX_UPLOAD_MB."""


class NotAllowed(ServiceError):
    """What the server's configuration does not allow (a model outside MMR_ALLOWED_MODELS)."""


class QueueFull(ServiceError):
    """Too many jobs wait already; retry once some have run."""
