"""Exceptions raised by drf-live's Python API (not wire errors: see ``errors``)."""


class AlreadyRegistered(Exception):
    """The model is registered already; unregister it first to replace it."""


class NotRegistered(Exception):
    """The model is not registered for notifications."""


class Unavailable(Exception):
    """The event store or channel layer cannot serve the request right now."""
