from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class NotificationsConfig(AppConfig):
    name = "notifications"
    # Not "notifications": django-notifications and others use that label, and
    # a label is what names the app's tables and migrations.
    label = "drf_live"
    verbose_name = "drf-live notifications"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks, layer_checks, metrics, settings_checks  # noqa: F401  (register the system checks)
        from .receivers import connect
        from .registry import site

        # Each installed app's notifications.py registers its models.
        autodiscover_modules("notifications", register_to=site)
        connect(site)
        metrics.configure()  # Prometheus metrics when DRF_LIVE["METRICS"] is on, else the no-op recorder
