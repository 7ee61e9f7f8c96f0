"""drf-live: push what your DRF API shows, over one WebSocket, when writes commit."""

from .registration import Registration
from .registry import Registry, register, site

__all__ = ["Registration", "Registry", "register", "site"]
