"""System checks of the registrations: mistakes found at start-up, not at the first event.

drf_live.E001 to E007 name a model or a field a registration cannot use;
drf_live.E008 an event type for a kind of change that does not exist;
drf_live.W009 an option or hook whose name is one letter away from drf-live's,
which is otherwise silently never read. The settings have checks of their own
(``settings_checks``).
"""

from __future__ import annotations

import difflib
import ipaddress
from typing import Any

from django.core import checks
from django.core.exceptions import FieldDoesNotExist

from .registry import site


@checks.register("drf_live")
def check_registrations(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    messages: list[checks.CheckMessage] = []
    for registration in site:
        messages.extend(_check(registration))
        messages.extend(_check_names(registration))
    return messages


#: The kinds of change ``event_types`` may rename (a touch is sent as an update).
RENAMED_KINDS = ("create", "update", "delete")


def _check_names(registration: Any) -> list[checks.CheckMessage]:
    """Names a registration gives that drf-live never reads: unknown event kinds, misspelled options."""
    from .registration import Registration

    model = registration.model
    label = model._meta.label
    messages: list[checks.CheckMessage] = []
    for kind in registration.event_types:
        if kind not in RENAMED_KINDS:
            close = difflib.get_close_matches(str(kind), RENAMED_KINDS, n=1, cutoff=0.6)
            messages.append(
                checks.Error(
                    f"{label}: event_types names {kind!r}, which is not a kind of change.",
                    hint=(f"Did you mean {close[0]!r}? " if close else "")
                    + 'Rename "create", "update" or "delete", e.g. event_types = {"update": "TASK_CHANGED"}.',
                    obj=model,
                    id="drf_live.E008",
                )
            )
    known = {name for name in dir(Registration) if not name.startswith("_")}
    defined = {
        name
        for cls in type(registration).__mro__
        if cls is not Registration and issubclass(cls, Registration)
        for name in vars(cls)
        if not name.startswith("_")
    }
    for name in sorted(defined - known):
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.85)
        if close:
            messages.append(
                checks.Warning(
                    f"{label}: the registration defines {name!r}, which drf-live never reads.",
                    hint=f"Did you mean {close[0]!r}? Rename it, or give your own attribute a name further from it.",
                    obj=model,
                    id="drf_live.W009",
                )
            )
    return messages


@checks.register("drf_live")
def check_metrics(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """``METRICS`` on needs prometheus-client, and addresses the endpoint can read."""
    from .conf import live_settings

    if not live_settings.METRICS:
        return []
    messages: list[checks.CheckMessage] = []
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        messages.append(
            checks.Error(
                "DRF_LIVE['METRICS'] is on but prometheus-client is not installed: nothing is recorded.",
                hint="pip install 'drf-live[metrics]', or turn METRICS off.",
                id="drf_live.E010",
            )
        )
    for entry in live_settings.METRICS_ADDRESSES or ():
        try:
            ipaddress.ip_network(str(entry), strict=False)
        except ValueError:
            messages.append(
                checks.Error(
                    f"DRF_LIVE['METRICS_ADDRESSES'] holds {entry!r}, which is not an address or a network.",
                    hint='List addresses or networks the metrics endpoint answers, e.g. ["127.0.0.1", "10.0.0.0/8"].',
                    id="drf_live.E011",
                )
            )
    token = live_settings.METRICS_TOKEN
    if token is not None and not isinstance(token, str):
        messages.append(
            checks.Error(
                "DRF_LIVE['METRICS_TOKEN'] must be a string (or None).",
                hint="Scrapers send it as `Authorization: Bearer <token>`.",
                id="drf_live.E011",
            )
        )
    return messages


def _check(registration: Any) -> list[checks.CheckMessage]:
    from .models import LiveModel

    model = registration.model
    label = model._meta.label
    messages: list[checks.CheckMessage] = []

    def error(message: str, hint: str, id: str) -> None:
        messages.append(checks.Error(f"{label}: {message}", hint=hint, obj=model, id=id))

    def field(name: str) -> Any:
        try:
            return model._meta.get_field(name)
        except FieldDoesNotExist:
            return None

    if not issubclass(model, LiveModel):
        error(
            "registered for notifications but does not inherit notifications.models.LiveModel.",
            "Add LiveModel to its bases so that its saves are recorded.",
            "drf_live.E001",
        )
    tracker = registration.get_tracker()
    if tracker is None and registration.tracked_fields is None:
        error(
            "registered for notifications but has no FieldTracker.",
            "Declare `tracker = FieldTracker(fields=[...])` with the fields whose change is pushed.",
            "drf_live.E002",
        )
    for name in registration.m2m_fields:
        found = field(name)
        if found is None or not found.many_to_many:
            error(
                f"m2m_fields names {name!r}, which is not a many-to-many field.",
                "List only ManyToManyFields of the model in m2m_fields.",
                "drf_live.E003",
            )
    for name in registration.filter_fields:
        found = field(name)
        if found is None or not found.many_to_one:
            error(
                f"filter_fields names {name!r}, which is not a foreign key of the model.",
                "Collections are filtered by foreign keys: list ForeignKey fields in filter_fields.",
                "drf_live.E004",
            )
        elif site.get_for(found.related_model) is None:
            error(
                f"filter_fields names {name!r}, whose model {found.related_model._meta.label} is not registered.",
                "Register the related model too: a collection is visible to whoever may see the object it names.",
                "drf_live.E004",
            )
    for name in registration.access_fields:
        if field(name) is None:
            error(
                f"access_fields names {name!r}, which is not a field of the model.",
                "List the fields (foreign keys, many-to-many fields) whose change may change who sees an object.",
                "drf_live.E005",
            )
    if registration.tracked_fields is not None:
        tracked_by_tracker = set(tracker.fields) if tracker is not None else set()
        for name in registration.tracked_fields:
            if field(name) is None:
                error(
                    f"tracked_fields names {name!r}, which is not a field of the model.",
                    "List model fields whose change should be pushed.",
                    "drf_live.E006",
                )
            elif name not in tracked_by_tracker and name not in registration.m2m_fields:
                error(
                    f"tracked_fields names {name!r}, which its FieldTracker does not track: its changes go unseen.",
                    f"Add {name!r} to the FieldTracker's fields (or to m2m_fields for a many-to-many field).",
                    "drf_live.E006",
                )
    for touch in registration.touches:
        found = field(touch.field)
        if found is None or not (found.many_to_one or found.many_to_many or found.one_to_many):
            error(
                f"a Touch names {touch.field!r}, which is not a relation (a foreign key, a many-to-many "
                "field or a reverse relation).",
                "A Touch follows a relation to the objects it touches.",
                "drf_live.E007",
            )
            continue
        if site.get_for(found.related_model) is None:
            error(
                f"a Touch follows {touch.field!r} to {found.related_model._meta.label}, which is not registered.",
                "Register the touched model, or remove the Touch.",
                "drf_live.E007",
            )
        tracked = set(registration.get_tracked_fields())
        for name in touch.when:
            if name not in tracked:
                error(
                    f"the Touch of {touch.field!r} waits for changes of {name!r}, which is not tracked.",
                    "Name tracked fields in `when` (see tracked_fields and the FieldTracker).",
                    "drf_live.E007",
                )
        if found.many_to_many and not found.auto_created and touch.field not in registration.m2m_fields:
            error(
                f"the Touch of the many-to-many field {touch.field!r} needs it in m2m_fields.",
                f"Add {touch.field!r} to m2m_fields, so that its edits are seen.",
                "drf_live.E007",
            )
    return messages
