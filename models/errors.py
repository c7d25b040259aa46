"""Errors raised by models/: the web layer maps each to one HTTP status."""


class MediaError(Exception):
    """Base for problems with a client's media file."""


class UnsupportedMediaError(MediaError):
    """The file is of a type we do not take, or cannot be decoded (HTTP 415)."""


class MediaTooLargeError(MediaError):
    """The file is within the upload limit but too large to decode safely (HTTP 413)."""


class ModelLoadError(Exception):
    """A model id could not be loaded; the message says what to do."""


class UnknownModelError(ModelLoadError):
    """The model id is not in the registry's syntax."""


class Overloaded(Exception):
    """An encoder's queue is full; the client should retry shortly (HTTP 429)."""
