"""``manage.py drf_live_asyncapi``: write the socket's AsyncAPI 3.0 document."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from notifications.asyncapi import build_document
from notifications.registry import site
from notifications.views import to_yaml


class Command(BaseCommand):
    help = (
        "Write the AsyncAPI 3.0 document of /ws/notifications/ (every registered model's requests, replies "
        "and events), to standard output or --output."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--output", "-o", help="The file to write (default: standard output).")
        parser.add_argument(
            "--format",
            choices=["json", "yaml"],
            help="json or yaml (default: yaml for an --output ending in .yaml or .yml, else json).",
        )
        parser.add_argument(
            "--server", help="The socket server's URL, ws://host:port or wss://host, to name in the document."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        output = options["output"]
        format = options["format"] or ("yaml" if output and output.endswith((".yaml", ".yml")) else "json")
        try:
            document = build_document(site, server=options["server"])
        except (ImproperlyConfigured, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        text = to_yaml(document) if format == "yaml" else json.dumps(document, indent=2) + "\n"
        if output:
            Path(output).write_text(text, encoding="utf-8")
            self.stderr.write(f"Wrote the AsyncAPI document to {output}.")
        else:
            self.stdout.write(text, ending="")
