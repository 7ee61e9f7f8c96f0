"""``manage.py drf_live_outbox``: what waits in the outbox, and publishing it by hand."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.test.utils import override_settings

from notifications import outbox
from notifications.conf import live_settings
from notifications.models import OutboxEntry
from notifications.relay import relay


class Command(BaseCommand):
    help = (
        "Show the drf-live outbox (rows waiting to be published, age of the oldest); "
        "--drain publishes them now, --sweep keeps publishing what other processes leave."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--drain", action="store_true", help="Publish every waiting row now, then exit.")
        parser.add_argument(
            "--sweep", action="store_true", help="Keep sweeping (for deployments whose servers do not sweep)."
        )
        parser.add_argument("--timeout", type=float, default=60.0, help="Seconds --drain may take (default 60).")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["sweep"]:
            self.stdout.write("Sweeping the outbox; Ctrl-C to stop.")
            relay.start(sweep=True)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                return
        if options["drain"]:
            self.drain(float(options["timeout"]))
        self.show()

    def show(self) -> None:
        for using in outbox.databases():
            backlog = outbox.backlog(using)
            leased = OutboxEntry.objects.using(using).filter(lease_until__gt=time.time()).count()
            lost = len(outbox.losses(using))
            age = "-" if backlog.oldest_age is None else f"{backlog.oldest_age:.1f} s"
            self.stdout.write(f"{using}: {backlog.rows} rows waiting, oldest {age}, {leased} being published")
            if lost:
                self.stdout.write(
                    f"{using}: rows were dropped at OUTBOX_LIMIT={live_settings.OUTBOX_LIMIT}: every epoch "
                    "rotates at the next publish"
                )

    def drain(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with override_settings(DRF_LIVE={**_current(), "OUTBOX_GRACE": 0.0}):
            while time.monotonic() < deadline:
                waiting = sum(outbox.backlog(using).rows for using in outbox.databases())
                if not waiting:
                    self.stdout.write("The outbox is empty.")
                    return
                taken = relay.sweep()
                if not taken:
                    time.sleep(0.5)
        raise CommandError(
            "Rows are still waiting after --timeout seconds: is Redis reachable? (They stay in the outbox.)"
        )


def _current() -> dict[str, Any]:
    from django.conf import settings

    return dict(getattr(settings, "DRF_LIVE", {}) or {})
