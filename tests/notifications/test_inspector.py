"""The inspector (``notifications/views.py``): when it is served, to whom, and the registry it shows."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from typing import Any

import pytest
from django.http import Http404
from django.test import RequestFactory
from django.urls import reverse

from api.models import Task
from notifications.conf import DEFAULTS
from notifications.registration import Registration
from notifications.registry import Registry
from notifications.views import InspectorView

URL = "/drf-live/inspector/"


class Table(HTMLParser):
    """The text of each cell of each row of a page's ``<tbody>``, whitespace collapsed."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.in_body = False
        self.cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag == "tbody":
            self.in_body = True
        elif self.in_body and tag == "tr":
            self.rows.append([])
        elif self.in_body and tag in {"th", "td"}:
            self.cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "tbody":
            self.in_body = False
        elif self.cell is not None and tag in {"th", "td"}:
            self.rows[-1].append(" ".join("".join(self.cell).split()))
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)


def registry_rows(html: str) -> dict[str, list[str]]:
    """The registry table's rows by model label (the first word of the row header)."""
    table = Table()
    table.feed(html)
    return {row[0].split()[0]: row[1:] for row in table.rows}


def script_config(html: str) -> Any:
    start = html.index('<script id="drf-live-inspector" type="application/json">')
    start = html.index(">", start) + 1
    return json.loads(html[start : html.index("</script>", start)])


@pytest.fixture
def staff(make_user: Any, fast_passwords: None) -> Any:
    return make_user("root", is_staff=True)


@pytest.fixture
def debug(settings: Any) -> Any:
    settings.DEBUG = True
    return settings


def test_the_project_serves_it_at_drf_live_inspector() -> None:
    assert reverse("drf_live:inspector") == URL


def test_it_is_on_only_with_debug_by_default() -> None:
    assert DEFAULTS["INSPECTOR_ENABLED"] is None


@pytest.mark.django_db
def test_a_staff_user_gets_the_page_when_debug_is_on(client: Any, debug: Any, staff: Any) -> None:
    client.force_login(staff)

    response = client.get(URL)

    assert response.status_code == 200
    assert response.templates[0].name == "notifications/inspector.html"
    assert 'src="/static/notifications/inspector.js"' in response.content.decode()
    # Never cached: not by the browser, not by a proxy.
    assert "no-store" in response["Cache-Control"]
    assert "private" in response["Cache-Control"]


@pytest.mark.django_db
def test_a_user_who_is_not_staff_gets_404(client: Any, debug: Any, make_user: Any, fast_passwords: None) -> None:
    client.force_login(make_user("bob"))

    assert client.get(URL).status_code == 404


@pytest.mark.django_db
def test_a_superuser_who_is_not_staff_gets_404(client: Any, debug: Any, make_user: Any, fast_passwords: None) -> None:
    client.force_login(make_user("root", is_superuser=True))

    assert client.get(URL).status_code == 404


@pytest.mark.django_db
def test_an_anonymous_user_gets_404_not_a_login_page(client: Any, debug: Any) -> None:
    response = client.get(URL)

    assert response.status_code == 404


@pytest.mark.django_db
def test_an_inactive_staff_user_gets_404(debug: Any, make_user: Any, fast_passwords: None) -> None:
    request = RequestFactory().get(URL)
    request.user = make_user("root", is_staff=True, is_active=False)

    with pytest.raises(Http404):
        InspectorView.as_view()(request)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("debug", "enabled", "status"),
    [
        (True, None, 200),
        (False, None, 404),
        (False, True, 200),
        (True, False, 404),
        (False, False, 404),
    ],
)
def test_inspector_enabled_decides_and_none_follows_debug(
    client: Any, settings: Any, staff: Any, debug: bool, enabled: bool | None, status: int
) -> None:
    settings.DEBUG = debug
    settings.DRF_LIVE = {"INSPECTOR_ENABLED": enabled}
    client.force_login(staff)

    assert client.get(URL).status_code == status


@pytest.mark.django_db
def test_it_shows_every_registered_model_with_its_options(client: Any, debug: Any, staff: Any) -> None:
    client.force_login(staff)

    rows = registry_rows(client.get(URL).content.decode())

    assert list(rows) == ["api.project", "api.task", "api.user"]
    assert rows["api.task"] == [
        "CREATE_TASK, UPDATE_TASK, DELETE_TASK",
        "project",
        "all",
        "retrieve, list",
        "none",
        "allowed",
        "project, title, done, assignee, private",
        "project, assignee",
    ]
    assert rows["api.user"][:3] == ["CREATE_USER, UPDATE_USER, DELETE_USER", "none", "self, others"]
    assert rows["api.project"][-2:] == ["name, owner, members", "owner, members"]


@pytest.mark.django_db
def test_the_row_header_names_the_viewset(client: Any, debug: Any, staff: Any) -> None:
    client.force_login(staff)

    table = Table()
    table.feed(client.get(URL).content.decode())

    assert ["api.task api.views.TaskViewSet"] == [row[0] for row in table.rows if row[0].startswith("api.task")]


@pytest.mark.django_db
def test_it_shows_what_a_registration_changed(client: Any, debug: Any, staff: Any, replace_registration: Any) -> None:
    from api.views import TaskViewSet

    class Custom(Registration):
        viewset = TaskViewSet
        event_types = {"update": "TASK_CHANGED"}
        socket_actions = ("retrieve", "list", "partial_update")
        custom_actions = {"archive": "archive_task", "<b>bold</b>": "bold"}
        allow_unfiltered = False
        filter_fields = ["project", "assignee"]
        audiences = ("owner", "<i>others</i>")

    replace_registration(Task, Custom)
    client.force_login(staff)

    html = client.get(URL).content.decode()

    assert registry_rows(html)["api.task"][:6] == [
        "CREATE_TASK, TASK_CHANGED, DELETE_TASK",
        "project, assignee",
        "owner, <i>others</i>",
        "retrieve, list, partial_update",
        "archive, <b>bold</b>",
        "not allowed",
    ]
    # Names are text, escaped, never markup.
    assert "<b>bold</b>" not in html and "&lt;b&gt;bold&lt;/b&gt;" in html


@pytest.mark.django_db
def test_the_script_gets_the_socket_path_and_each_model(client: Any, debug: Any, staff: Any) -> None:
    client.force_login(staff)

    config = script_config(client.get(URL).content.decode())

    assert config["socketPath"] == "/ws/notifications/"
    assert config["maxFrames"] == 500
    task = next(model for model in config["models"] if model["label"] == "api.task")
    assert task["filter_fields"] == ["project"]
    assert task["allow_unfiltered"] is True
    assert task["event_types"] == {"create": "CREATE_TASK", "update": "UPDATE_TASK", "delete": "DELETE_TASK"}


@pytest.mark.django_db
def test_with_nothing_registered_it_says_so(debug: Any, staff: Any) -> None:
    request = RequestFactory().get(URL)
    request.user = staff

    response: Any = InspectorView.as_view(registry=Registry())(request)

    assert response.status_code == 200
    html = response.render().content.decode()
    assert "No model is registered for notifications" in html
    assert registry_rows(html) == {}
