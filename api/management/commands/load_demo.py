"""Create the demo users, projects and tasks once, and print how to use the demo."""

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
# alice owns Website (bob is a member); carol owns Mobile app (alice is a member).
PROJECTS = [("Website", "alice", ["bob"]), ("Mobile app", "carol", ["alice"])]
TASKS = [
    ("Website", "Write the landing page"),
    ("Website", "Choose a colour scheme"),
    ("Mobile app", "Sketch the login screen"),
]


class Command(BaseCommand):
    help = "Load the demo data (only into a database that has none) and print the demo users and their tokens."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--port", default="8000", help="Port the demo server listens on (for the printed commands)."
        )
        parser.add_argument("--quiet", action="store_true", help="Load without printing the walkthrough.")

    @transaction.atomic
    def load(self) -> tuple[dict[str, User], dict[str, str], bool]:
        """Create the demo users if missing, and their projects and tasks only along with them.

        Users are found by username, which nobody can change from the page or the API. Projects and
        tasks are not looked up at all: the user renames, deletes and reassigns them, so any key we
        could find them by (a title, a name, a membership) may have changed, and recreating what no
        longer matches would bring back what the user deleted or duplicate what they renamed. The demo
        users existing is the marker that the demo data was loaded once.
        """
        usernames = [username for username, _, _ in USERS]
        seeded = User.objects.filter(username__in=usernames).exists()
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
        if not seeded:
            projects: dict[str, Project] = {}
            for name, owner, members in PROJECTS:
                projects[name] = Project.objects.create(name=name, owner=users[owner])
                projects[name].members.add(*(users[member] for member in members))
            for project, title in TASKS:
                Task.objects.create(project=projects[project], title=title)
        return users, tokens, not seeded

    def handle(self, *args: Any, **options: Any) -> None:
        users, tokens, created = self.load()
        if options["quiet"]:
            return
        port = options["port"]
        base = f"http://127.0.0.1:{port}"
        ws = f"ws://127.0.0.1:{port}/ws/notifications/"
        out = self.stdout.write
        out(self.style.MIGRATE_HEADING("drf-live demo"))
        if created:
            out("  Demo data loaded: projects Website and Mobile app, three tasks.")
        else:
            out("  Demo data kept as you left it (delete db.sqlite3, or `make clean`, to start over).")
        out(f"  Demo page {base}/  (sign in as {', '.join(users)}; password '{PASSWORD}')")
        out(f"  REST API  {base}/api/    admin  {base}/admin/    login  {base}/api-auth/login/")
        out(f"  WebSocket {ws}")
        out("  Users:")
        for username, user in users.items():
            out(f"    {username:<6} id {user.pk:<8} token {tokens[username]}")
        alice, bob = tokens["alice"], tokens["bob"]
        # A task bob can see in a project alice owns: the first one left, whatever was renamed or deleted.
        task = Task.objects.visible_to(users["bob"]).filter(project__owner=users["alice"]).order_by("id").first()
        task_id = str(task.pk) if task else "<task id>"
        frame = json.dumps({"action": "subscribe", "model": "api.task", "id": task_id})
        out("  Watch a task as bob (paste in another terminal):")
        out(f"    .venv/bin/python -m notifications.watch {ws} api.task {task_id} --token {bob}")
        out("    or, with websocat:")
        out(f"    (echo '{frame}'; cat) | websocat -H 'Authorization: Token {bob}' {ws}")
        out("  Then change it as alice:")
        out(
            f"    curl -X PATCH -H 'Authorization: Token {alice}' -H 'Content-Type: application/json' "
            f'-d \'{{"title": "Write the landing page today"}}\' {base}/api/tasks/{task_id}/'
        )
