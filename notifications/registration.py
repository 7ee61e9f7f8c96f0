"""How one model is exposed to sockets: the REST API's rules, reused, plus event details."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import models
from django.http import HttpRequest
from rest_framework.request import Request

from .publisher import Delivery
from .targets import Target

if TYPE_CHECKING:
    from rest_framework.viewsets import GenericViewSet

    from .registry import Registry

EVENT_KINDS = ("create", "update", "delete")


class Registration:
    """Options and hooks for one registered model, like a ``ModelAdmin``.

    Visibility and representation come from ``viewset``: an object is visible
    to a user when the viewset's ``filter_queryset(get_queryset())`` contains it
    and its permission classes allow a ``GET`` of it by that user, and a push
    carries ``get_serializer(obj).data``, exactly as ``GET`` would return it.
    """

    #: The DRF viewset whose rules and serializer the REST API uses for this model.
    viewset: type[GenericViewSet] | None = None
    #: Fields whose change sends an event; None means the model's FieldTracker fields
    #: plus ``m2m_fields``.
    tracked_fields: Sequence[str] | None = None
    #: Many-to-many fields (not seen by FieldTracker) whose change sends an event.
    m2m_fields: Sequence[str] = ()
    #: Event type names by kind; missing kinds default to ``UPDATE_<MODEL>`` and so on.
    event_types: dict[str, str] = {}
    #: The audiences a push is serialized for; see ``get_audience``.
    audiences: Sequence[str] = ("all",)

    def __init__(self, model: type[models.Model], registry: Registry) -> None:
        self.model = model
        self.registry = registry
        self.label = model._meta.label_lower
        if self.viewset is None:
            raise ImproperlyConfigured(
                f"The notifications registration of {model._meta.label} needs a `viewset`: "
                "the DRF viewset whose queryset, permissions and serializer the REST API uses."
            )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.label}>"

    # Events -------------------------------------------------------------

    def get_event_type(self, kind: str) -> str:
        """The wire ``type`` of a ``create``, ``update`` or ``delete`` event."""
        if kind in self.event_types:
            return self.event_types[kind]
        return f"{kind.upper()}_{self.model._meta.model_name.upper()}"

    def get_tracked_fields(self) -> list[str]:
        if self.tracked_fields is not None:
            return list(self.tracked_fields)
        tracker = self.get_tracker()
        fields = list(tracker.fields) if tracker is not None else []
        return fields + [name for name in self.m2m_fields if name not in fields]

    def get_tracker(self) -> Any:
        from model_utils import FieldTracker

        for value in vars(self.model).values():
            if isinstance(value, FieldTracker):
                return value
        for base in self.model.__mro__[1:]:
            for value in vars(base).values():
                if isinstance(value, FieldTracker):
                    return value
        return None

    def changed_fields(self, instance: models.Model) -> list[str]:
        """The tracked fields of ``instance`` that differ from the database, before a save."""
        tracker = self.get_tracker()
        if tracker is None:
            return []
        tracked = self.get_tracked_fields()
        return [name for name in getattr(instance, tracker.name).changed() if name in tracked]

    def get_deliveries(
        self, instance: models.Model | None, wire_id: str, kind: str, changed: list[str]
    ) -> list[Delivery]:
        """What one committed change sends, to which targets; called once per change.

        An update or a delete goes to the object's subscribers. Payloads are
        serialized here, once per audience, never once per subscriber.
        """
        target = Target(self.label, id=wire_id)
        if kind == "delete":
            payloads = {audience: {"id": wire_id} for audience in self.audiences}
            return [Delivery(target, self.get_event_type("delete"), payloads)]
        if kind == "update" and instance is not None:
            payloads = self.serialize_audiences(instance)
            return [Delivery(target, self.get_event_type("update"), payloads, {"changed": list(changed)})]
        return []

    # Identity -----------------------------------------------------------

    def wire_id(self, instance_or_pk: Any) -> str:
        """The id of an object as the REST API shows it (a hashid for hashid keys)."""
        pk = instance_or_pk.pk if isinstance(instance_or_pk, models.Model) else instance_or_pk
        return str(pk)

    def decode_id(self, value: Any) -> Any | None:
        """The primary key value (for lookups) named by a wire id, or None if it names none.

        Hashid keys accept only their canonical hashid: a bare integer, which
        the hashid field would otherwise take as a raw key, is refused.
        """
        if not isinstance(value, str) or not value or len(value) > 100:
            return None
        field = self.model._meta.pk
        if hasattr(field, "get_hashid"):
            try:
                hashid = field.get_hashid(value)
            except (ValueError, TypeError):
                return None
            return value if str(hashid) == value else None
        try:
            return field.to_python(value)
        except (ValidationError, ValueError, TypeError):
            return None

    # The REST API's rules -------------------------------------------------

    def build_request(self, user: Any, *, host: str | None = None) -> Request:
        """A ``GET`` request by ``user``, as the viewset and serializer expect to see."""
        http = HttpRequest()
        http.method = "GET"
        http.META["SERVER_NAME"] = host or _default_host()
        http.META["SERVER_PORT"] = "443" if settings.SECURE_SSL_REDIRECT else "80"
        request = Request(http)
        request.user = user
        request.auth = None
        return request

    def get_view(self, user: Any, *, action: str = "retrieve", host: str | None = None) -> Any:
        """An instance of ``viewset`` set up as if dispatching a ``GET`` by ``user``."""
        assert self.viewset is not None
        view = self.viewset()
        view.action_map = {"get": action}
        view.action = action
        view.args = ()
        view.kwargs = {}
        view.format_kwarg = None
        view.request = self.build_request(user, host=host)
        view.headers = {}
        return view

    def has_permission(self, view: Any, obj: models.Model | None = None) -> bool:
        for permission in view.get_permissions():
            if not permission.has_permission(view.request, view):
                return False
            if obj is not None and not permission.has_object_permission(view.request, view, obj):
                return False
        return True

    def get_visible(self, user: Any, pk: Any, *, host: str | None = None) -> models.Model | None:
        """The object with ``pk`` if ``user`` may ``GET`` it through the REST API, else None."""
        view = self.get_view(user, host=host)
        if not self.has_permission(view):
            return None
        obj = view.filter_queryset(view.get_queryset()).filter(pk=pk).first()
        if obj is None or not self.has_permission(view, obj):
            return None
        return obj

    def serialize(self, instance: models.Model, user: Any, *, host: str | None = None) -> Any:
        """What ``GET`` of ``instance`` returns to ``user``."""
        view = self.get_view(user, host=host)
        return view.get_serializer(instance).data

    # Audiences ------------------------------------------------------------

    def get_audience(self, user: Any, instance: models.Model) -> str:
        """Which audience ``user`` belongs to for ``instance``.

        Two users in one audience must get the same REST representation of the
        object; override together with ``audiences`` and ``get_audience_user``
        when the serializer's output depends on the requesting user.
        """
        return self.audiences[0]

    def get_audience_user(self, audience: str, instance: models.Model) -> Any:
        """A user whose view of ``instance`` stands for everyone in ``audience``."""
        from django.contrib.auth.models import AnonymousUser

        return AnonymousUser()

    def serialize_audiences(self, instance: models.Model) -> dict[str, Any]:
        """The payload of ``instance`` for each audience: one serializer run per audience."""
        return {
            audience: self.serialize(instance, self.get_audience_user(audience, instance))
            for audience in self.audiences
        }


def _default_host() -> str:
    for host in settings.ALLOWED_HOSTS:
        if host and "*" not in host and not host.startswith("."):
            return host
    return "localhost"


def tracked_m2m_registrations(registrations: Iterable[Registration]) -> list[tuple[Registration, str]]:
    """Every (registration, many-to-many field name) whose changes send events."""
    return [(registration, name) for registration in registrations for name in registration.m2m_fields]
