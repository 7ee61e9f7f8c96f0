"""Create the demo users, projects and tasks (idempotent) and print how to watch pushes."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction
from rest_framework.authtoken.models import Token

from api.models import Project, Task, User

USERS = [
    ("alice", "Alice Example", "alice@example.com"),
    ("bob", "Bob Example", "bob@example.com"),
    ("carol", "Carol Example", "carol@example.com"),
]
PASSWORD = "demo-password"


class Command(BaseCommand):
    help = "Load the demo data (safe to run twice) and print the demo users and their tokens."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--port", default="8000", help="Port the demo server listens on (for the printed commands)."
        )
        parser.add_argument("--quiet", action="store_true", help="Load without printing the walkthrough.")

    @transaction.atomic
    def load(self) -> tuple[dict[str, User], dict[str, str], Task]:
        users: dict[str, User] = {}
        tokens: dict[str, str] = {}
        for username, display_name, email in USERS:
            user, created = User.objects.get_or_create(
                username=username, defaults={"display_name": display_name, "email": email}
            )
            if created:
                user.set_password(PASSWORD)
                user.save()
            users[username] = user
            tokens[username] = Token.objects.get_or_create(user=user)[0].key
        website, _ = Project.objects.get_or_create(name="Website", owner=users["alice"])
        website.members.add(users["bob"])
        mobile, _ = Project.objects.get_or_create(name="Mobile app", owner=users["carol"])
        mobile.members.add(users["alice"])
        first = None
        for project, title in [
            (website, "Write the landing page"),
            (website, "Choose a colour scheme"),
            (mobile, "Sketch the login screen"),
        ]:
            task, _ = Task.objects.get_or_create(project=project, title=title)
            first = first or task
        assert first is not None
        return users, tokens, first

    def handle(self, *args: Any, **options: Any) -> None:
        users, tokens, task = self.load()
        if options["quiet"]:
            return
        port = options["port"]
        base = f"http://127.0.0.1:{port}"
        ws = f"ws://127.0.0.1:{port}/ws/notifications/"
        out = self.stdout.write
        out(self.style.MIGRATE_HEADING("drf-live demo"))
        out(f"  REST API  {base}/api/    admin  {base}/admin/    login  {base}/api-auth/login/")
        out(f"  WebSocket {ws}")
        out(f"  Users (password '{PASSWORD}'):")
        for username, user in users.items():
            out(f"    {username:<6} id {user.pk:<8} token {tokens[username]}")
        frame = json.dumps({"action": "subscribe", "model": "api.task", "id": str(task.pk)})
        alice, bob = tokens["alice"], tokens["bob"]
        out("  Watch a task as bob (paste in another terminal):")
        out(f"    .venv/bin/python -m notifications.watch {ws} api.task {task.pk} --token {bob}")
        out("    or, with websocat:")
        out(f"    (echo '{frame}'; cat) | websocat -H 'Authorization: Token {bob}' {ws}")
        out("  Then change it as alice:")
        out(
            f"    curl -X PATCH -H 'Authorization: Token {alice}' -H 'Content-Type: application/json' "
            f'-d \'{{"title": "Write the landing page today"}}\' {base}/api/tasks/{task.pk}/'
        )
