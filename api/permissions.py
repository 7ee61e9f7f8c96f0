from __future__ import annotations

from typing import Any

from rest_framework import permissions
from rest_framework.request import Request


class IsOwnerOrReadOnly(permissions.BasePermission):
    """Anyone who sees a project may read it; only its owner may change it."""

    def has_object_permission(self, request: Request, view: Any, obj: Any) -> bool:
        return request.method in permissions.SAFE_METHODS or obj.owner_id == request.user.pk


class IsSelfOrReadOnly(permissions.BasePermission):
    """Users may read whom they see, and change only themselves."""

    def has_object_permission(self, request: Request, view: Any, obj: Any) -> bool:
        return request.method in permissions.SAFE_METHODS or obj.pk == request.user.pk
