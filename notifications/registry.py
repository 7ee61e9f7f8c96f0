"""The registry of models whose changes are pushed, in the style of the admin site."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from django.apps import apps
from django.db import models

from .exceptions import AlreadyRegistered, NotRegistered

if TYPE_CHECKING:
    from .registration import Registration

R = TypeVar("R", bound="type[Registration]")


class Registry:
    """Maps models to their ``Registration``; one default instance is ``site``."""

    def __init__(self) -> None:
        self._registry: dict[type[models.Model], Registration] = {}

    def register(
        self,
        model: type[models.Model],
        registration_class: type[Registration] | None = None,
        **options: Any,
    ) -> Registration:
        """Register ``model``; ``options`` set attributes on a subclass of the registration."""
        from .registration import Registration

        if model._meta.abstract:
            raise TypeError(f"{model.__name__} is abstract and cannot be registered.")
        model = model._meta.concrete_model  # type: ignore[assignment]
        if model in self._registry:
            raise AlreadyRegistered(
                f"{model._meta.label} is already registered for notifications; "
                "call unregister() first to replace its registration."
            )
        cls = registration_class or Registration
        if options:
            cls = type(f"{model.__name__}Registration", (cls,), options)
        registration = cls(model, self)
        self._registry[model] = registration
        return registration

    def unregister(self, model: type[models.Model]) -> None:
        if model not in self._registry:
            raise NotRegistered(f"{model._meta.label} is not registered for notifications.")
        del self._registry[model]

    def is_registered(self, model: type[models.Model]) -> bool:
        return model in self._registry

    def get(self, model: type[models.Model]) -> Registration:
        """The registration of ``model``; raises ``NotRegistered``."""
        try:
            return self._registry[model._meta.concrete_model]  # type: ignore[index]
        except KeyError:
            raise NotRegistered(f"{model._meta.label} is not registered for notifications.") from None

    def get_for(self, model: type[models.Model]) -> Registration | None:
        """The registration of ``model`` or None; cheap enough for every ``save()``."""
        return self._registry.get(model._meta.concrete_model)  # type: ignore[arg-type]

    def get_by_label(self, label: Any) -> Registration | None:
        """The registration for a model label as ``apps.get_model`` accepts it, or None."""
        if not isinstance(label, str) or label.count(".") != 1:
            return None
        try:
            model = apps.get_model(label)
        except (LookupError, ValueError):
            return None
        return self._registry.get(model)

    def __iter__(self) -> Iterator[Registration]:
        return iter(list(self._registry.values()))


site = Registry()


def register(model: type[models.Model], *, site: Registry = site) -> Callable[[R], R]:
    """Class decorator: ``@notifications.register(Task)`` on a ``Registration`` subclass."""

    def wrapper(registration_class: R) -> R:
        site.register(model, registration_class)
        return registration_class

    return wrapper
