"""The DRF serializers that validate what a socket asks to (un)subscribe to."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import Any

from rest_framework import serializers
from rest_framework.settings import api_settings

from .registry import Registry, site
from .targets import Target

NOT_FOUND = "not_found"


class StrictCharField(serializers.CharField):
    """A string, and only a string (DRF's ``CharField`` would take ``5`` as ``"5"``)."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer, not a string or a boolean."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class TargetSerializer(serializers.Serializer):
    """A target: a registered model label plus an ``id`` or a ``filter``.

    Needs ``context["registry"]``. Every way of naming nothing this socket may
    see (unknown model, bad hashid, missing object, forbidden object) fails
    with the single code ``not_found``, so nothing can be enumerated.
    """

    model = StrictCharField(max_length=100)
    id = StrictCharField(max_length=100, required=False)
    filter = serializers.DictField(child=StrictCharField(max_length=100), required=False, allow_empty=True)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "id" in attrs and "filter" in attrs:
            raise serializers.ValidationError(
                {"id": "Give an id or a filter, not both.", "filter": "Give an id or a filter, not both."}
            )
        registry: Registry = self.context.get("registry", site)
        registration = registry.get_by_label(attrs["model"])
        if registration is None:
            raise serializers.ValidationError("No such object.", code=NOT_FOUND)
        attrs["registration"] = registration
        if "id" not in attrs:
            # Neither id nor filter: every object of the model the viewset shows the user.
            attrs.setdefault("filter", {})
            if not attrs["filter"] and not registration.allow_unfiltered and self.context.get("collection", True):
                raise serializers.ValidationError("No such object.", code=NOT_FOUND)
        if "filter" in attrs:
            unknown = sorted(set(attrs["filter"]) - set(registration.filter_fields))
            if unknown:
                raise serializers.ValidationError(
                    {"filter": f"Not a filter of {registration.label}: {', '.join(unknown)}."}
                )
            attrs["target"] = Target.collection(registration.label, attrs["filter"])
        else:
            attrs["target"] = Target(registration.label, id=attrs["id"])
        return attrs


class SubscriptionSerializer(TargetSerializer):
    """A subscribe request; valid only if the socket's user may see the target.

    Needs ``context["user"]``; on success ``validated_data`` holds the
    registration, the target, the visible ``instance`` (a queryset, for a
    collection) and the ``group``: the stream channel the socket listens on.
    With ``context["check_access"]`` False, only the request's shape is
    checked, without the database: the consumer checks access later, in the
    same trip to the database as the snapshot.
    """

    since = StrictIntegerField(min_value=0, required=False)
    epoch = StrictCharField(max_length=100, required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        if ("since" in attrs) != ("epoch" in attrs):
            raise serializers.ValidationError(
                {"since": "Send since and epoch together.", "epoch": "Send since and epoch together."}
            )
        attrs["group"] = attrs["target"].stream
        if not self.context.get("check_access", True):
            if "id" in attrs and attrs["registration"].decode_id(attrs["id"]) is None:
                raise serializers.ValidationError("No such object.", code=NOT_FOUND)
            return attrs
        instance = visible_target(attrs, self.context["user"], self.context.get("host"))
        if instance is None:
            raise serializers.ValidationError("No such object.", code=NOT_FOUND)
        attrs["instance"] = instance
        return attrs

    def get_group_name(self) -> str:
        """The group of this subscription (after ``is_valid()``), as in the OddBird pattern."""
        if not hasattr(self, "_validated_data"):
            raise AssertionError("You must call `.is_valid()` before calling `.get_group_name()`.")
        return self.validated_data["group"]


def visible_target(
    attrs: dict[str, Any], user: Any, host: str | None, seen: Mapping[tuple[str, str], Any] | None = None
) -> Any | None:
    """The object (or a collection's queryset) ``attrs`` names, if ``user`` may see it; else None.

    ``seen``: objects ``look_up_together`` already looked up for this user and host.
    """
    registration = attrs["registration"]
    target: Target = attrs["target"]
    if target.is_collection:
        return registration.get_visible_collection(user, dict(attrs["filter"]), host=host)
    pk = registration.decode_id(attrs["id"])
    if pk is None:
        return None
    if seen is not None and (registration.label, str(pk)) in seen:
        return seen[(registration.label, str(pk))]
    return registration.get_visible(user, pk, host=host)


#: Objects looked up together, by (``user_state``, host), then by (label, ``str(pk)``); None if not visible.
Seen = dict[tuple[Hashable, str | None], dict[tuple[str, str], Any]]


def look_up_together(asks: Iterable[tuple[Any, str | None, dict[str, Any]]]) -> Seen:
    """Look up, for several subscribes, the objects they name, with one query per user, host and model.

    ``asks``: ``(user, host, attrs)`` per subscribe (``attrs`` as validated
    without the database). The objects that one user (as ``user_state`` tells
    users apart) names two or more of, on one host, are read by one
    ``Registration.get_visible_many``; the rest are left to ``visible_target``.
    Objects named only by collections' filters are read for the access only
    (``whole=False``): the list's snapshot reads what it shows itself.
    """
    wanted: dict[tuple[Hashable, str | None], dict[Any, list[Any]]] = {}
    users: dict[tuple[Hashable, str | None], Any] = {}
    whole: set[Any] = set()  # (group, registration) with an object subscribed: read it as GET does
    for user, host, attrs in asks:
        state = user_state(user)
        if state is None:
            continue
        users.setdefault((state, host), user)
        by_model = wanted.setdefault((state, host), {})
        for registration, pk in named_objects(attrs):
            by_model.setdefault(registration, []).append(pk)
        if not attrs["target"].is_collection:
            whole.add(((state, host), attrs["registration"]))
    seen: Seen = {}
    for group, by_model in wanted.items():
        for registration, pks in by_model.items():
            if len(set(map(str, pks))) < 2:
                continue
            found = registration.get_visible_many(
                users[group], pks, host=group[1], whole=(group, registration) in whole
            )
            seen.setdefault(group, {}).update(((registration.label, str(pk)), obj) for pk, obj in found.items())
    return seen


def named_objects(attrs: dict[str, Any]) -> list[tuple[Any, Any]]:
    """``(registration, pk)`` of each object a subscribe names: its object, or those its filter names."""
    registration = attrs["registration"]
    if not attrs["target"].is_collection:
        pk = registration.decode_id(attrs["id"])
        return [] if pk is None else [(registration, pk)]
    named = []
    for name, value in dict(attrs["filter"]).items():
        related = registration._related_registration(name)
        pk = None if related is None else related.decode_id(value)
        if pk is not None:
            named.append((related, pk))
    return named


def user_state(user: Any) -> Hashable | None:
    """What tells users apart for a shared lookup: the class and every field's value (None: share nothing).

    Two sockets share a lookup only when their users are the same row in the
    same state, so that the viewset's rules, which may read any of it, see the
    same user. Anonymous users and users with an unhashable field share nothing.
    """
    if user is None or not getattr(user, "is_authenticated", False) or getattr(user, "_meta", None) is None:
        return None
    try:
        state = (type(user), tuple(getattr(user, field.attname) for field in user._meta.concrete_fields))
        hash(state)
    except (AttributeError, TypeError):
        return None
    return state


def error_code(errors: Any) -> tuple[str, list[str]]:
    """The wire error for a serializer's ``errors``: ``not_found``, or ``invalid`` and its fields."""
    codes = _codes(errors)
    if NOT_FOUND in codes:
        return NOT_FOUND, []
    fields = sorted(name for name in errors if name != api_settings.NON_FIELD_ERRORS_KEY)
    return "invalid", fields


def _codes(errors: Any) -> set[str]:
    if isinstance(errors, dict):
        return set().union(*(_codes(value) for value in errors.values())) if errors else set()
    if isinstance(errors, list):
        return set().union(*(_codes(value) for value in errors)) if errors else set()
    return {getattr(errors, "code", "")}


class ViewsetRequestSerializer(TargetSerializer):
    """A request the registered viewset answers (``retrieve``, ``list``, writes, custom actions).

    Needs ``context["user"]`` and ``context["action"]``; the consumer has
    checked that the registration enables the action. On success
    ``validated_data`` holds the ``pk`` (actions on one object), the
    collection ``lookups`` (``list``), and the ``query`` parameters.
    """

    page = StrictIntegerField(min_value=1, required=False)
    query = serializers.DictField(child=StrictCharField(max_length=1000), required=False)
    data = serializers.JSONField(required=False)  # type: ignore[assignment]  # a field, not Serializer.data

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        from .actions import VIEWSET_ACTIONS

        action = self.context["action"]
        detail = VIEWSET_ACTIONS[action][1] if action in VIEWSET_ACTIONS else "id" in attrs
        if detail and "id" not in attrs:
            raise serializers.ValidationError({"id": f"{action} needs the id of an object."})
        attrs = super().validate(attrs)
        registration = attrs["registration"]
        user = self.context["user"]
        query = dict(attrs.get("query", {}))
        if "page" in attrs:
            query["page"] = str(attrs["page"])
        attrs["query"] = query
        if detail:
            pk = registration.decode_id(attrs["id"])
            if pk is None:
                raise serializers.ValidationError("No such object.", code=NOT_FOUND)
            attrs["pk"] = pk
        elif action == "list":
            lookups = registration.collection_lookups(user, dict(attrs["filter"]), host=self.context.get("host"))
            if lookups is None:
                raise serializers.ValidationError("No such object.", code=NOT_FOUND)
            attrs["lookups"] = lookups
            # The filter is also a query parameter of the REST list it matches (?project=...), so
            # that the links the viewset builds (pagination) are that list's links.
            attrs["query"] = {**dict(attrs["filter"]), **query}
        return attrs
