"""Print an AsyncAPI document of registrations that use every option, for tests/js/asyncapi.test.mjs.

The example domain enables no socket writes, no custom action and renames no
event; the official parser must accept the document of a registry that does,
too. Run as ``python -m tests.asyncapi_variants`` from the repository.
"""

from __future__ import annotations

import json
import os
import sys

import django


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    django.setup()

    from api.models import Project, Task, User
    from api.notifications import ProjectRegistration, TaskRegistration, UserRegistration
    from api.views import TaskViewSet
    from notifications.actions import Reply, SocketRequest
    from notifications.asyncapi import build_document
    from notifications.registry import Registry

    class Unpaged(TaskViewSet):
        pagination_class = None

    class EveryAction(TaskRegistration):
        viewset = Unpaged
        socket_actions = ("retrieve", "list", "create", "update", "partial_update", "destroy")
        custom_actions = {"assign": "assign", "tick/all": "assign", "ping": "assign"}
        event_types = {"update": "TASK_CHANGED", "create": "TASK ADDED"}

        def assign(self, request: SocketRequest) -> Reply:
            return Reply("ASSIGNED")

    class ObjectsOnly(ProjectRegistration):
        allow_unfiltered = False
        socket_actions = ("retrieve", "partial_update")

    registry = Registry()
    registry.register(Task, EveryAction)
    registry.register(Project, ObjectsOnly)
    registry.register(User, UserRegistration)
    json.dump(build_document(registry, server="wss://live.example.com"), sys.stdout, indent=2)


if __name__ == "__main__":
    main()
