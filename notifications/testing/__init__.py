"""A kit for testing your own pushes: sockets signed in as a user, captured events, the declaration checker.

``docs/testing.md`` shows each with an example. In short::

    # conftest.py (the top-level one): the fixtures live_socket, captured_events, api_client
    pytest_plugins = ["notifications.testing"]

    # a test
    from notifications.testing import capture_events, check_subscribable_by, live_socket, published

- ``live_socket(user)``: a socket through your ASGI application, signed in as
  ``user``, with ``subscribe()``, ``assert_pushed()`` and ``assert_nothing_pushed()``;
- ``capture_events()``: what a block's writes publish, without a socket;
- ``api_client(user)``: a DRF ``APIClient`` signed in as ``user``;
- ``published()`` / ``flush()``: wait until the relay published every commit;
- ``check_subscribable_by(Model)``: a registration's ``subscribable_by()``
  against its viewset, for every user and object.

Importing this package imports nothing of Django: each name loads its module
on first use, so pytest may load the plugin before Django is configured.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .capture import capture_events
    from .captured import CapturedEvent, CapturedEvents, wire_id
    from .clients import LiveSocket, api_client, live_socket
    from .visibility import check_subscribable_by
    from .waiting import flush, published

# pytest loads this module's plugins when it is named in ``pytest_plugins`` (or ``-p``).
pytest_plugins = ["notifications.testing.plugin"]

_EXPORTS = {
    "CapturedEvent": "captured",
    "CapturedEvents": "captured",
    "capture_events": "capture",
    "wire_id": "captured",
    "LiveSocket": "clients",
    "api_client": "clients",
    "live_socket": "clients",
    "check_subscribable_by": "visibility",
    "flush": "waiting",
    "published": "waiting",
}

__all__ = [
    "CapturedEvent",
    "CapturedEvents",
    "LiveSocket",
    "api_client",
    "capture_events",
    "check_subscribable_by",
    "flush",
    "live_socket",
    "published",
    "wire_id",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
