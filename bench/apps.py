"""The drf-live app with nothing registered: the benchmarks' baseline without drf-live."""

from notifications.apps import NotificationsConfig


class Unregistered(NotificationsConfig):
    # Neither the apps' notifications.py modules nor the receivers: no model is live.
    def ready(self) -> None:
        return None
