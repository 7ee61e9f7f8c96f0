"""The visibility-declaration checker: a registration's ``subscribable_by()`` against its viewset."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.contrib.auth import get_user_model
from django.db import models

from ..registration import Registration
from ..registry import Registry, site


def check_subscribable_by(
    model_or_registration: type[models.Model] | Registration,
    *,
    objects: Iterable[models.Model] | None = None,
    users: Iterable[Any] | None = None,
    registry: Registry = site,
) -> int:
    """Compare a registration's ``subscribable_by()`` with its viewset, for every user and object.

    For each object (default: every row of the model) and each user (default:
    every active user), the declaration must name the user exactly when the
    viewset shows them the object. Raises ``AssertionError`` listing every
    disagreement; returns how many pairs were compared. Run it over the data of
    your own tests, including the awkward cases (private rows, removed members).
    """
    registration = (
        model_or_registration
        if isinstance(model_or_registration, Registration)
        else registry.get(model_or_registration)
    )
    model = registration.model
    rows = list(objects) if objects is not None else list(model._base_manager.all())
    people = list(users) if users is not None else list(get_user_model()._default_manager.filter(is_active=True))
    wrong: list[str] = []
    compared = 0
    for obj in rows:
        declared = registration.subscribable_by(obj)
        if declared is None:
            raise AssertionError(f"{registration.label} declares no subscribable_by(): nothing to check.")
        declared_keys = {str(pk) for pk in declared}
        for user in people:
            viewset_says = registration.get_visible(user, obj.pk) is not None
            declaration_says = str(user.pk) in declared_keys
            compared += 1
            if viewset_says != declaration_says:
                wrong.append(
                    f"{user} {'may' if viewset_says else 'may not'} see {registration.label} {obj.pk} "
                    f"through the viewset, but subscribable_by() {'omits' if viewset_says else 'names'} them"
                )
    if wrong:
        raise AssertionError(
            f"{registration.label}.subscribable_by() disagrees with its viewset in {len(wrong)} of "
            f"{compared} cases:\n  " + "\n  ".join(wrong)
        )
    return compared
