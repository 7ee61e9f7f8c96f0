"""The data every scenario uses: users with API tokens, one project they all see, N tasks.

``python -m bench.fixtures TASKS USERS`` (with the Django environment of
``devtools.servers.django_env``) creates them unless they exist and prints
``{"tokens": [...], "tasks": [hashid, ...]}``. The project's owner is the first
user and every other user is a member, so drf-live's access checks pass for
every task. Several users, because drf-live (as shipped) lets one user hold at
most ``MAX_SOCKETS_PER_USER`` (50) sockets per server process.
"""

from __future__ import annotations

import json
import sys


def main(count: int, users: int) -> None:
    import django

    django.setup()
    from django.db import transaction
    from rest_framework.authtoken.models import Token

    from api.models import Project, Task, User

    with transaction.atomic():
        have_users = User.objects.filter(username__startswith="bench-").count()
        User.objects.bulk_create(User(username=f"bench-{index:05d}") for index in range(have_users, users))
        members = list(User.objects.filter(username__startswith="bench-").order_by("username")[:users])
        tokens = [Token.objects.get_or_create(user=user)[0].key for user in members]
        project, _ = Project.objects.get_or_create(name="Bench", owner=members[0])
        project.members.add(*members[1:])
        have = Task.objects.filter(project=project).count()
        Task.objects.bulk_create(Task(project=project, title=f"task {index}") for index in range(have, count))
    tasks = [str(pk) for pk in Task.objects.filter(project=project).order_by("id").values_list("pk", flat=True)[:count]]
    print(json.dumps({"tokens": tokens, "tasks": tasks}))


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
