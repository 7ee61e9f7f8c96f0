"""App configurations for the benchmarks' variants of the example project."""

from types import MethodType

from django.apps import AppConfig

from notifications.apps import NotificationsConfig


class Unregistered(NotificationsConfig):
    # Neither the apps' notifications.py modules nor the receivers: no model is live.
    def ready(self) -> None:
        return None


class Undeclared(AppConfig):
    """``bench.settings_undeclared``: the task registration without its ``subscribable_by``.

    Listed after ``notifications`` and ``api``, so the registrations exist when
    it is ready; the registration instance's method is replaced by the default
    one (None: ask the viewset), the class is left as it is.
    """

    name = "bench"
    label = "bench_undeclared"

    def ready(self) -> None:
        from api.models import Task
        from notifications.registration import Registration
        from notifications.registry import site

        registration = site.get(Task)
        registration.subscribable_by = MethodType(Registration.subscribable_by, registration)  # type: ignore[method-assign]
