"""drf-live: push what your DRF API shows, over one WebSocket, when writes commit."""

from .events import publish_changes, publish_event
from .registration import Registration, Touch
from .registry import Registry, register, site

__version__ = "0.1.0"

__all__ = ["Registration", "Registry", "Touch", "publish_changes", "publish_event", "register", "site"]
