"""How one model is exposed to sockets: the REST API's rules, reused, plus event details."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import models
from django.db.models import Case, IntegerField, Subquery, Value, When
from django.db.models.functions import Coalesce
from django.http import HttpRequest
from rest_framework.request import Request

from .targets import Target
from .touches import Touch

if TYPE_CHECKING:
    from rest_framework.viewsets import GenericViewSet

    from .registry import Registry


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
    #: Foreign keys a collection may be filtered on, as in ``{"project": "<id>"}``.
    filter_fields: Sequence[str] = ()
    #: Fields (foreign keys and many-to-many fields too) whose change may change
    #: who sees an object: the object's subscribers re-check their access before
    #: the event, and users removed from a user-valued field re-check everything.
    access_fields: Sequence[str] = ()
    #: The audiences a push is serialized for; see ``get_audience``.
    audiences: Sequence[str] = ("all",)
    #: Other registered objects whose representation depends on this model (see ``Touch``).
    touches: Sequence[Touch] = ()
    #: Viewset actions a socket may request (``notifications.actions``). Reads are on;
    #: add "create", "update", "partial_update", "destroy" to let sockets write
    #: through the viewset, as the REST API does.
    socket_actions: Sequence[str] = ("retrieve", "list")
    #: Actions of your own: wire name -> name of a method of this registration that
    #: takes a ``notifications.actions.SocketRequest`` and returns a payload or a ``Reply``.
    custom_actions: dict[str, str] = {}
    #: Whether a socket may subscribe to every object of the model it may see
    #: (a subscription with neither ``id`` nor ``filter``).
    allow_unfiltered: bool = True

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
        return f"{kind.upper()}_{self.model.__name__.upper()}"

    def get_tracked_fields(self) -> list[str]:
        """The fields whose change is pushed, in the model's field order (the same in every process)."""
        if self.tracked_fields is not None:
            return list(self.tracked_fields)
        tracker = self.get_tracker()
        tracked = set(tracker.fields) if tracker is not None else set()
        order = [field.name for field in self.model._meta.get_fields()]
        fields = sorted(tracked, key=lambda name: order.index(name) if name in order else len(order))
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

    def revoked_users(self, instance: models.Model) -> list[Any]:
        """Users a save takes out of a user-valued access field (a changed owner, say)."""
        tracker = self.get_tracker()
        if tracker is None or not self.access_fields:
            return []
        instance_tracker = getattr(instance, tracker.name)
        user_model = get_user_model()
        users = []
        for name in self.access_fields:
            field = self.model._meta.get_field(name)
            if field.many_to_one and field.related_model is user_model and name in tracker.fields:
                if instance_tracker.has_changed(name) and instance_tracker.previous(name) is not None:
                    users.append(instance_tracker.previous(name))
        return users

    def is_visible(self, user: Any, target: Target, *, host: str | None = None) -> bool:
        """Whether ``user`` may still see ``target`` (an object or a collection)."""
        if target.filter is not None:
            return self.get_visible_collection(user, dict(target.filter), host=host) is not None
        pk = self.decode_id(target.id)
        return pk is not None and self.get_visible(user, pk, host=host, whole=False) is not None

    # Collections ----------------------------------------------------------

    def filter_values(self, instance: models.Model | None) -> dict[str, str | None]:
        """The wire id of each filter field's related object (None when unset)."""
        if instance is None:
            return {}
        return {
            name: self.wire_value(name, getattr(instance, self._field(name).attname)) for name in self.filter_fields
        }

    def previous_filter_values(self, instance: models.Model) -> dict[str, str | None]:
        """The filter values ``instance`` had when it was loaded, for the fields changed since."""
        tracker = self.get_tracker()
        if tracker is None or not self.filter_fields:
            return {}
        instance_tracker = getattr(instance, tracker.name)
        return {
            name: self.wire_value(name, instance_tracker.previous(name))
            for name in self.filter_fields
            if name in tracker.fields and instance_tracker.has_changed(name)
        }

    def wire_value(self, name: str, raw: Any) -> str | None:
        """The wire id of the object the foreign key ``name`` holds (``raw``: a pk or an object)."""
        if raw is None:
            return None
        if isinstance(raw, models.Model):
            raw = raw.pk
        related = self._related_registration(name)
        return related.wire_id(raw) if related is not None else str(raw)

    def _field(self, name: str) -> models.Field[Any, Any]:
        field = self.model._meta.get_field(name)
        assert isinstance(field, models.Field), f"{self.label}.{name} is not a concrete field"
        return field

    def _related_registration(self, name: str) -> Registration | None:
        """The registration of the model that the foreign key ``name`` points to, if registered."""
        related_model = self._field(name).related_model
        if not isinstance(related_model, type):
            return None
        return self.registry.get_for(related_model)

    def collections_of(self, values: dict[str, str | None]) -> list[dict[str, str]]:
        """Every filter (one per set of filter fields, the empty one too) whose collection holds these values."""
        names = sorted(name for name, value in values.items() if value is not None)
        filters: list[dict[str, str]] = [{}] if self.allow_unfiltered else []
        for mask in range(1, 1 << len(names)):
            filters.append({name: str(values[name]) for bit, name in enumerate(names) if mask & (1 << bit)})
        return filters

    def get_visible_collection(
        self, user: Any, filter: dict[str, str], *, host: str | None = None, equalised: bool = True
    ) -> Any | None:
        """The queryset of the collection ``filter`` if ``user`` may see it, else None.

        A collection is visible when the user may ``GET`` each object its filter
        names (by that model's own registration) and may list this model.
        ``equalised``: as for ``get_visible``, for the objects the filter names.
        """
        lookups = self.collection_lookups(user, filter, host=host, equalised=equalised)
        return None if lookups is None else self.collection_queryset(user, lookups, host=host)

    def collection_queryset(self, user: Any, lookups: dict[str, Any], *, host: str | None = None) -> Any | None:
        """The list's queryset narrowed by ``lookups`` (``collection_lookups``), if ``user`` may list this model."""
        view = self.get_view(user, action="list", host=host)
        if not self.has_permission(view):
            return None
        return view.filter_queryset(view.get_queryset()).filter(**lookups)

    def collection_lookups(
        self,
        user: Any,
        filter: dict[str, str],
        *,
        host: str | None = None,
        equalised: bool = True,
        seen: Mapping[tuple[str, str], Any] | None = None,
    ) -> dict[str, Any] | None:
        """The ORM lookups of ``filter``, if ``user`` may see every object it names; else None.

        ``seen``: objects already looked up for this user and host, by
        ``(label, str(pk))`` (None for one they may not see), as
        ``consumers.look_up_together`` finds them.
        """
        lookups: dict[str, Any] = {}
        for name, value in filter.items():
            related = self._related_registration(name)
            if related is None:
                return None
            pk = related.decode_id(value)
            if pk is None:
                return None
            key = (related.label, str(pk))
            if seen is not None and key in seen:
                obj = seen[key]
            else:
                obj = related.get_visible(user, pk, host=host, equalised=equalised, whole=False)
            if obj is None:
                return None
            lookups[name] = pk
        return lookups

    def get_collection_audience(self, user: Any, filter: dict[str, str]) -> str:
        """The audience of a collection's subscriber for application events (the first, by default)."""
        return self.audiences[0]

    # Identity -----------------------------------------------------------

    def wire_id(self, instance_or_pk: Any) -> str:
        """The id of an object as the REST API shows it (a hashid for hashid keys)."""
        pk = instance_or_pk.pk if isinstance(instance_or_pk, models.Model) else instance_or_pk
        return str(pk)

    def decode_id(self, value: Any) -> Any | None:
        """The primary key value (for lookups) named by a wire id, or None if it names none.

        Hashid keys accept only their canonical hashid: a bare integer, which
        the hashid field would otherwise take as a raw key, is refused. Their
        key is the decoded ``Hashid`` (``str()`` gives the wire id back): a
        lookup by it uses the integer as it is, where a lookup by the string
        would decode it again, for every query.
        """
        if not isinstance(value, str) or not value or len(value) > 100:
            return None
        field = self.model._meta.pk
        if hasattr(field, "get_hashid"):
            try:
                hashid = field.get_hashid(value)
            except (ValueError, TypeError):
                return None
            return hashid if str(hashid) == value else None
        try:
            return field.to_python(value)
        except (ValidationError, ValueError, TypeError):
            return None

    # The REST API's rules -------------------------------------------------

    def build_request(self, user: Any, *, host: str | None = None) -> Request:
        """A ``GET`` request by ``user``, as the viewset and serializer expect to see."""
        http = HttpRequest()
        http.method = "GET"
        http.META["SERVER_NAME"] = host or default_host()
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

    def get_visible(
        self, user: Any, pk: Any, *, host: str | None = None, equalised: bool = True, whole: bool = True
    ) -> models.Model | None:
        """The object with ``pk`` if ``user`` may ``GET`` it through the REST API, else None.

        A missing object and one the user may not see take the same work: the
        viewset's rules always run on a row that exists (the object, or else the
        table's first row as a stand-in), and only whether it matched comes back.
        Otherwise the database skips the rules for a missing id, and the time of
        a ``not_found`` tells whether an id exists (docs/security.md).

        ``equalised=False`` reads the object in one query instead of two, for
        the relay: its verdicts answer no client's question about an id, and
        the rows it decides on exist.

        ``whole=False``: the object is for the access only (an object a
        collection's filter names), read without the queryset's
        ``prefetch_related``; the row, the filters and the permissions are the same.
        """
        if not equalised:
            return self._read_visible(user, pk, host=host, whole=whole)
        view = self.get_view(user, host=host)
        if not self.has_permission(view):
            return None
        visible = view.filter_queryset(view.get_queryset())
        rows = self.model._default_manager.order_by()
        candidate = Coalesce(
            Subquery(rows.filter(pk=pk).values("pk")[:1]), Subquery(rows.order_by("pk").values("pk")[:1])
        )
        hit = Case(When(pk=pk, then=Value(1)), default=Value(0), output_field=IntegerField())
        if visible.filter(pk=candidate).annotate(drf_live_hit=hit).values_list("drf_live_hit", flat=True).first() != 1:
            return None
        obj = _bare(visible.filter(pk=pk), whole).first()
        if obj is None or not self.has_permission(view, obj):
            return None
        return obj

    def get_visible_many(
        self, user: Any, pks: Iterable[Any], *, host: str | None = None, whole: bool = True
    ) -> dict[Any, Any]:
        """``get_visible`` of several keys for one user: ``{pk: object or None}``, in four queries.

        ``whole``: as for ``get_visible``.

        Equalised as ``get_visible`` is, for a set: the viewset's rules run on as
        many existing rows as there are keys (each key's row if it exists, else
        a stand-in from the first rows of the table that no key names), and only
        which of those rows they let through comes back; the visible targets are
        then read whole. Every query runs whatever the keys name, so the time
        tells neither how many exist nor which.
        """
        asked = {str(pk): pk for pk in pks}
        found: dict[Any, Any] = dict.fromkeys(asked.values())
        view = self.get_view(user, host=host)
        if not self.has_permission(view):
            return found
        rows = self.model._default_manager.order_by()
        existing = {str(pk): pk for pk in rows.filter(pk__in=list(asked.values())).values_list("pk", flat=True)}
        first = rows.order_by("pk").values_list("pk", flat=True)[: 2 * len(asked)]
        spare = [pk for pk in first if str(pk) not in asked][: len(asked) - len(existing)]
        visible = view.filter_queryset(view.get_queryset())
        passed = visible.filter(pk__in=[*existing.values(), *spare]).values_list("pk", flat=True)
        hits = [existing[key] for key in map(str, passed) if key in existing]
        if hits:
            for obj in _bare(visible.filter(pk__in=hits), whole):
                if self.has_permission(view, obj):
                    found[asked[str(obj.pk)]] = obj
        return found

    def _read_visible(self, user: Any, pk: Any, *, host: str | None = None, whole: bool = True) -> models.Model | None:
        view = self.get_view(user, host=host)
        if not self.has_permission(view):
            return None
        obj = _bare(view.filter_queryset(view.get_queryset()).filter(pk=pk), whole).first()
        if obj is None or not self.has_permission(view, obj):
            return None
        return obj

    def serialize(self, instance: models.Model, user: Any, *, host: str | None = None) -> Any:
        """What ``GET`` of ``instance`` returns to ``user``."""
        view = self.get_view(user, host=host)
        return view.get_serializer(instance).data

    # Audiences ------------------------------------------------------------

    def get_audience(self, user: Any, instance: models.Model) -> str:
        """Which audience ``user`` belongs to for ``instance`` (as the viewset read it for them).

        Two users in one audience must get the same REST representation of the
        object: the relay serializes once per audience, for one of its users,
        and hands every other one the same frame. Override together with
        ``audiences`` when the serializer's output depends on the requesting user.
        """
        return self.audiences[0]

    # Who may see an object ------------------------------------------------

    def subscribable_by(self, instance: models.Model) -> Iterable[Any] | None:
        """The primary keys of every user who may see ``instance``, or None to ask the viewset.

        By default (None) the relay asks the viewset, once per distinct user
        subscribed, whether that user may see each changed object. An override
        answers for everyone with one query; it must agree with the viewset,
        which ``notifications.testing.check_subscribable_by`` verifies over
        your own test data. Permission classes still apply on top of it.
        Return a queryset of the user model (``values_list("pk", flat=True)``)
        rather than a set: the relay narrows it to the subscribed users in the
        database. A collection uses the declarations of its members'
        registration and of the registrations of the objects its filter names.
        """
        return None


def _bare(queryset: Any, whole: bool) -> Any:
    """``queryset``, or without its ``prefetch_related`` when the objects are for the access only."""
    return queryset if whole else queryset.prefetch_related(None)


def default_host() -> str:
    for host in settings.ALLOWED_HOSTS:
        if host and "*" not in host and not host.startswith("."):
            return host
    return "localhost"
