"""The AsyncAPI document: what it names, that its schemas are the serializers', and that real frames match it.

The official parser's verdict on the document is tests/js/asyncapi.test.mjs;
here, every kind of frame the server sends in a real session is validated
against the message the document gives for it (JSON Schema draft 7, which
AsyncAPI's schema format extends).
"""

from __future__ import annotations

import json
import sys
from typing import Any, get_args

import pytest
import yaml
from channels.db import database_sync_to_async
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from jsonschema import Draft7Validator
from rest_framework import viewsets

from api.models import Project, Task
from api.notifications import ProjectRegistration, TaskRegistration, UserRegistration
from api.serializers import ProjectSerializer, TaskSerializer, UserSerializer
from api.views import TaskViewSet
from notifications.actions import Reply, SocketRequest
from notifications.asyncapi import build_document
from notifications.frames import CloseCode, ErrorCode
from notifications.registry import Registry, site
from notifications.testing import published

URL = "/drf-live/asyncapi.json"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return build_document(site)


def payload_of(document: dict[str, Any], key: str) -> dict[str, Any]:
    """The frame schema of message ``key``, with the document's components to resolve its references."""
    return {"$ref": f"#/components/messages/{key}/payload", "components": document["components"]}


def errors(document: dict[str, Any], key: str, frame: dict[str, Any]) -> list[str]:
    validator = Draft7Validator(payload_of(document, key))
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(frame)]


def message_key(frame: dict[str, Any]) -> str:
    """The document's message for a frame the server sent, found as a client would: by type and model."""
    if frame["type"] in ("PONG", "ERROR", "AUTHENTICATED"):
        return str(frame["type"])
    if frame["type"] == "UNSUBSCRIBED":
        return "UNSUBSCRIBED.revoked" if "reason" in frame["meta"] else "UNSUBSCRIBED"
    return f"{frame['meta']['model']}.{frame['type']}"


def reply_keys(document: dict[str, Any], operation: str) -> set[str]:
    return {ref["$ref"].rsplit("/", 1)[-1] for ref in document["operations"][operation]["reply"]["messages"]}


# What the document names ------------------------------------------------------------------------------------


def test_document_is_asyncapi_3_with_the_socket_as_its_one_channel(document):
    assert document["asyncapi"] == "3.0.0"
    assert list(document["channels"]) == ["notifications"]
    channel = document["channels"]["notifications"]
    assert channel["address"] == "/ws/notifications/"
    # Every message an operation names is the channel's (AsyncAPI 3 requires it), and every one is defined.
    for operation in document["operations"].values():
        for ref in operation["messages"] + operation.get("reply", {}).get("messages", []):
            key = ref["$ref"].removeprefix("#/channels/notifications/messages/")
            assert key in channel["messages"]
            assert key in document["components"]["messages"]


def test_document_names_every_client_request(document):
    operations = document["operations"]
    for action in ("subscribe", "unsubscribe", "retrieve", "list", "authenticate", "ping"):
        assert operations[action]["action"] == "receive", action
    assert reply_keys(document, "subscribe") == {
        "ERROR",
        "api.project.SUBSCRIBED",
        "api.task.SUBSCRIBED",
        "api.user.SUBSCRIBED",
    }
    assert reply_keys(document, "retrieve") >= {"api.task.RETRIEVED", "ERROR"}
    assert reply_keys(document, "list") >= {"api.task.LISTED", "ERROR"}
    assert reply_keys(document, "authenticate") == {"AUTHENTICATED", "ERROR"}
    assert reply_keys(document, "ping") == {"PONG", "ERROR"}
    assert reply_keys(document, "unsubscribe") == {"UNSUBSCRIBED", "ERROR"}
    # The example domain enables no writes on the socket: the document offers none.
    assert not {"create", "update", "partial_update", "destroy"} & set(operations)


def test_document_names_every_registered_model_s_events(document):
    operations = document["operations"]
    for registration in site:
        for kind in ("update", "create", "delete"):
            key = f"{registration.label}.{registration.get_event_type(kind)}"
            assert operations[key]["action"] == "send", key
            assert document["components"]["messages"][key]["name"] == registration.get_event_type(kind)
    assert {"api.task.UPDATE_TASK", "api.project.UPDATE_PROJECT", "api.user.UPDATE_USER"} <= set(operations)
    assert operations["UNSUBSCRIBED.revoked"]["action"] == "send"


def test_document_names_every_error_code_and_close_code(document):
    error = document["components"]["messages"]["ERROR"]["payload"]
    assert error["properties"]["payload"]["properties"]["code"]["enum"] == list(get_args(ErrorCode))
    assert set(document["components"]["messages"]["ERROR"]["x-error-codes"]) == set(get_args(ErrorCode))
    channel = document["channels"]["notifications"]
    codes = {name: value for name, value in vars(CloseCode).items() if name.isupper()}
    assert {entry["code"] for entry in channel["x-close-codes"]} == set(codes.values())
    assert 1009 in {entry["code"] for entry in channel["x-close-codes"]}
    for code in codes.values():
        assert f"| {code} |" in channel["description"]


def test_registration_s_writes_custom_actions_and_renamed_events_are_documented():
    class Writable(TaskRegistration):
        socket_actions = ("retrieve", "list", "create", "update", "partial_update", "destroy")
        custom_actions = {"assign": "assign"}
        event_types = {"update": "TASK_CHANGED"}

        def assign(self, request: SocketRequest) -> Reply:
            return Reply("ASSIGNED")

    class ObjectsOnly(ProjectRegistration):
        allow_unfiltered = False  # no filter fields either: no collections, so never a CREATE

    registry = Registry()
    registry.register(Task, Writable)
    registry.register(Project, ObjectsOnly)

    document = build_document(registry)

    operations = document["operations"]
    assert reply_keys(document, "create") == {"api.task.CREATED", "ERROR"}
    assert reply_keys(document, "update") == {"api.task.UPDATED", "ERROR"}
    assert reply_keys(document, "partial_update") == {"api.task.UPDATED", "ERROR"}
    assert reply_keys(document, "destroy") == {"api.task.DESTROYED", "ERROR"}
    assert reply_keys(document, "assign") == {"api.task.assign.reply", "ERROR"}
    assert "api.task.TASK_CHANGED" in operations and "api.task.UPDATE_TASK" not in operations
    assert "api.project.UPDATE_PROJECT" in operations and "api.project.CREATE_PROJECT" not in operations
    messages = document["components"]["messages"]
    create = messages["api.task.create"]["payload"]
    assert create["properties"]["data"] == {"$ref": "#/components/schemas/TaskRequest"}
    patch = messages["api.task.partial_update"]["payload"]
    assert patch["properties"]["data"] == {"$ref": "#/components/schemas/PatchedTaskRequest"}
    assert "required" not in document["components"]["schemas"]["PatchedTaskRequest"]
    # Objects only: subscribing needs an id.
    assert messages["api.project.subscribe"]["payload"]["required"] == ["model", "id"]


def test_without_the_unfiltered_collection_a_subscribe_names_an_id_or_a_filter():
    registry = Registry()
    registry.register(Task, TaskRegistration, allow_unfiltered=False)
    document = build_document(registry)

    for action in ("subscribe", "unsubscribe"):
        key = f"api.task.{action}"
        assert errors(document, key, {"action": action, "model": "api.task", "id": "Xk3"}) == []
        assert errors(document, key, {"action": action, "model": "api.task", "filter": {"project": "a8B"}}) == []
        assert errors(document, key, {"action": action, "model": "api.task"}) != []
        assert errors(document, key, {"action": action, "model": "api.task", "filter": {}}) != []
    assert errors(document, "api.task.list", {"action": "list", "model": "api.task"}) != []


# The schemas are the serializers' -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "serializer", "component"),
    [
        ("api.task", TaskSerializer, "Task"),
        ("api.project", ProjectSerializer, "Project"),
        ("api.user", UserSerializer, "User"),
    ],
)
def test_an_object_s_schema_has_its_serializer_s_fields(document, model, serializer, component):
    schemas = document["components"]["schemas"]
    assert set(schemas[component]["properties"]) == set(serializer().fields)
    retrieved = document["components"]["messages"][f"{model}.RETRIEVED"]["payload"]
    assert retrieved["properties"]["payload"] == {"$ref": f"#/components/schemas/{component}"}
    update_type = site.get_by_label(model).get_event_type("update")  # type: ignore[union-attr]
    event = document["components"]["messages"][f"{model}.{update_type}"]["payload"]["properties"]
    assert event["payload"] == {"$ref": f"#/components/schemas/{component}"}
    assert event["meta"]["properties"]["changed"]["items"]["enum"] == list(serializer().fields)


def test_field_types_come_from_the_serializer(document):
    task = document["components"]["schemas"]["Task"]
    assert task["properties"]["done"]["type"] == "boolean"
    assert task["properties"]["assignee"]["type"] == ["string", "null"]  # allow_null, as JSON Schema says it
    assert task["properties"]["title"]["maxLength"] == 200
    assert task["properties"]["id"]["readOnly"] is True
    assert document["components"]["schemas"]["Project"]["properties"]["open_tasks"]["type"] == "integer"


def test_a_list_has_the_paginated_shape_of_the_rest_list(document):
    listed = document["components"]["messages"]["api.task.LISTED"]["payload"]["properties"]["payload"]
    assert listed == {"$ref": "#/components/schemas/PaginatedTaskList"}
    page = document["components"]["schemas"]["PaginatedTaskList"]
    assert set(page["properties"]) == {"count", "next", "previous", "results"}
    assert page["properties"]["next"]["type"] == ["string", "null"]  # DRF's "nullable", rewritten
    assert "nullable" not in json.dumps(document)
    assert page["properties"]["results"]["items"] == {"$ref": "#/components/schemas/Task"}
    subscribed = document["components"]["messages"]["api.task.SUBSCRIBED"]["payload"]["properties"]["payload"]
    assert {"$ref": "#/components/schemas/PaginatedTaskList"} in subscribed["anyOf"]


def test_a_list_that_does_not_paginate_is_an_array():
    class Unpaged(TaskViewSet):
        pagination_class = None

    registry = Registry()
    registry.register(Task, TaskRegistration, viewset=Unpaged)

    document = build_document(registry)

    listed = document["components"]["messages"]["api.task.LISTED"]["payload"]["properties"]["payload"]
    assert listed == {"type": "array", "items": {"$ref": "#/components/schemas/Task"}}


def test_a_field_shown_to_some_audiences_only_is_optional(document):
    user = document["components"]["schemas"]["User"]
    assert "email" in user["properties"]
    assert "email" not in user.get("required", [])
    assert user["x-drf-live-audiences"] == list(UserRegistration.audiences)
    assert "audience" in user["description"]
    # One audience: drf-spectacular's required fields stay.
    assert {"id", "project", "title"} <= set(document["components"]["schemas"]["Task"]["required"])


# Real frames match the document ------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("fast_passwords")
async def test_every_frame_of_a_session_matches_its_message_in_the_document(connect, domain, token_for):
    document = await database_sync_to_async(build_document)(site)
    bob_token = await database_sync_to_async(token_for)(domain["bob"])
    bob = await connect(token=bob_token)
    website, task = domain["website"], domain["task"]
    frames: list[dict[str, Any]] = []

    async def ask(**request: Any) -> dict[str, Any]:
        await bob.send_json_to({"request_id": len(frames) + 1, **request})
        frame = await bob.receive_json_from(timeout=5)
        frames.append(frame)
        return frame

    assert (await ask(action="ping"))["type"] == "PONG"
    assert (await ask(action="subscribe", model="api.task", id=str(task.pk)))["type"] == "SUBSCRIBED"
    collection = await ask(action="subscribe", model="api.Task", filter={"project": str(website.pk)})
    assert collection["type"] == "SUBSCRIBED"
    assert (await ask(model="api.user", id=str(domain["bob"].pk)))["payload"]["email"] == "bob@example.com"
    assert "email" not in (await ask(action="subscribe", model="api.user", id=str(domain["alice"].pk)))["payload"]
    assert (await ask(action="retrieve", model="api.project", id=str(website.pk)))["type"] == "RETRIEVED"
    assert (await ask(action="list", model="api.task", filter={"project": str(website.pk)}, page=1))["type"] == "LISTED"
    assert (await ask(action="list", model="api.user"))["type"] == "LISTED"
    assert (await ask(action="subscribe", model="api.task", id="nope"))["payload"]["code"] == "not_found"
    assert (await ask(action="create", model="api.task", data={}))["payload"]["code"] == "not_allowed"
    await bob.send_to(text_data="not json")
    frames.append(await bob.receive_json_from(timeout=5))

    # Events: an edit (to the object and to the collection), a task created and deleted.
    edited = await database_sync_to_async(Task.objects.get)(pk=task.pk)
    edited.title = "Write the docs"
    await database_sync_to_async(edited.save)()
    await published()
    events = [await bob.receive_json_from(timeout=5) for _ in range(2)]
    assert {frame["type"] for frame in events} == {"UPDATE_TASK"}
    created = await database_sync_to_async(Task.objects.create)(project=website, title="New")
    await published()
    events.append(await bob.receive_json_from(timeout=5))
    await database_sync_to_async(created.delete)()
    await published()
    events.append(await bob.receive_json_from(timeout=5))
    assert [frame["type"] for frame in events[2:]] == ["CREATE_TASK", "DELETE_TASK"]
    frames.extend(events)
    assert (await ask(action="unsubscribe", model="api.task", id=str(task.pk)))["type"] == "UNSUBSCRIBED"

    # Losing access: bob taken out of the project ends what he saw through it.
    await database_sync_to_async(website.members.remove)(domain["bob"])
    await published()
    revoked = []
    while not await bob.receive_nothing(timeout=1):
        revoked.append(await bob.receive_json_from(timeout=5))
    assert revoked and all(frame["meta"].get("reason") == "revoked" for frame in revoked)
    frames.extend(revoked)

    # An authenticate frame, on a socket that came without credentials.
    stranger = await connect()
    await stranger.send_json_to({"action": "authenticate", "token": bob_token, "request_id": "a1"})
    frames.append(await stranger.receive_json_from(timeout=5))

    kinds = {message_key(frame) for frame in frames}
    assert kinds >= {
        "PONG",
        "ERROR",
        "AUTHENTICATED",
        "UNSUBSCRIBED",
        "UNSUBSCRIBED.revoked",
        "api.task.SUBSCRIBED",
        "api.user.SUBSCRIBED",
        "api.project.RETRIEVED",
        "api.task.LISTED",
        "api.user.LISTED",
        "api.task.UPDATE_TASK",
        "api.task.CREATE_TASK",
        "api.task.DELETE_TASK",
    }
    for frame in frames:
        assert errors(document, message_key(frame), frame) == [], frame


def test_a_frame_that_does_not_fit_its_message_is_refused(document):
    """The check above is not vacuous: the document's schemas refuse what the server does not send."""
    task = {"id": "a8OBM2B", "project": "a8OBM2B", "title": "Write docs", "done": False, "assignee": None}
    retrieved = {"type": "RETRIEVED", "payload": task, "meta": {"request_id": 1, "model": "api.task", "id": "a8OBM2B"}}
    assert errors(document, "api.task.RETRIEVED", retrieved) == []
    assert errors(document, "api.project.RETRIEVED", retrieved) != []  # another model's payload and meta
    untitled = {**retrieved, "payload": {key: value for key, value in task.items() if key != "title"}}
    assert errors(document, "api.task.RETRIEVED", untitled) != []
    assert errors(document, "api.task.RETRIEVED", {**retrieved, "payload": {**task, "done": "yes"}}) != []
    update = {"type": "UPDATE_TASK", "payload": task, "meta": {"model": "api.task", "id": "a8OBM2B", "seq": 3}}
    assert errors(document, "api.task.UPDATE_TASK", update) != []  # no `changed`
    assert errors(document, "api.task.UPDATE_TASK", {**update, "meta": {**update["meta"], "changed": ["x"]}}) != []
    error = {"type": "ERROR", "error": True, "payload": {"code": "oops", "detail": "?"}, "meta": {}}
    assert errors(document, "ERROR", error) != []
    assert errors(document, "ERROR", {**error, "payload": {"code": "throttled", "detail": "?"}}) == []


def test_requests_of_the_protocol_match_their_messages(document):
    task = "api.task.subscribe"
    assert errors(document, task, {"action": "subscribe", "model": "api.Task", "id": "Xk3", "request_id": 1}) == []
    assert errors(document, task, {"model": "api.task", "filter": {"project": "a8B"}}) == []  # the OddBird form
    assert errors(document, task, {"action": "subscribe", "model": "api.task", "id": "Xk3", "since": 4}) != []
    assert errors(document, task, {"action": "subscribe", "model": "api.project", "id": "Xk3"}) != []
    assert errors(document, task, {"action": "subscribe", "model": "api.task", "filter": {"owner": "a"}}) != []
    both = {"action": "subscribe", "model": "api.task", "id": "Xk3", "filter": {"project": "a8B"}}
    assert errors(document, task, both) != []
    assert errors(document, task, {"action": "subscribe", "model": "api.task"}) == []  # every task they see
    listed = {"action": "list", "model": "api.task", "filter": {"project": "a8B"}, "page": 2, "query": {"x": "y"}}
    assert errors(document, "api.task.list", listed) == []
    assert errors(document, "authenticate", {"action": "authenticate", "token": "9944b"}) == []
    assert errors(document, "authenticate", {"action": "authenticate"}) != []


# Where it is served, and written ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_url_serves_the_document_in_debug(client, settings):
    settings.DEBUG = True

    response = client.get(URL)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    document = response.json()
    assert document["asyncapi"] == "3.0.0"
    assert document["servers"]["drf-live"]["host"] == "testserver"
    assert document["servers"]["drf-live"]["protocol"] == "ws"
    assert "api.task.UPDATE_TASK" in document["operations"]
    as_yaml = client.get("/drf-live/asyncapi.yaml")
    assert as_yaml.status_code == 200
    assert as_yaml["Content-Type"].startswith("application/yaml")
    assert yaml.safe_load(as_yaml.content) == document
    assert b"&id0" not in as_yaml.content  # no YAML aliases for the schemas the document shares


@pytest.mark.django_db
def test_url_is_wss_behind_https(client, settings):
    settings.DEBUG = True

    document = client.get(URL, secure=True).json()

    assert document["servers"]["drf-live"]["protocol"] == "wss"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("debug", "enabled", "status"),
    [(False, None, 404), (False, True, 200), (True, False, 404), (True, None, 200)],
)
def test_url_is_off_without_debug_unless_the_setting_enables_it(client, settings, debug, enabled, status):
    settings.DEBUG = debug
    settings.DRF_LIVE = {"ASYNCAPI_URL_ENABLED": enabled}

    assert client.get(URL).status_code == status
    assert client.get("/drf-live/asyncapi.yaml").status_code == status


def test_info_can_be_set(settings):
    settings.DRF_LIVE = {"ASYNCAPI_INFO": {"title": "Task board live", "version": "2.1"}}

    info = build_document(site)["info"]

    assert (info["title"], info["version"]) == ("Task board live", "2.1")
    assert info["description"]


def test_command_writes_the_document(tmp_path, document):
    output = tmp_path / "asyncapi.json"

    call_command("drf_live_asyncapi", output=str(output))

    assert json.loads(output.read_text()) == document


def test_command_writes_yaml_and_names_a_server(tmp_path):
    output = tmp_path / "asyncapi.yaml"

    call_command("drf_live_asyncapi", output=str(output), server="wss://live.example.com")

    written = yaml.safe_load(output.read_text())
    assert written["servers"]["drf-live"] == {**written["servers"]["drf-live"], "host": "live.example.com"}
    assert written["servers"]["drf-live"]["protocol"] == "wss"
    with pytest.raises(CommandError, match="ws:// or wss://"):
        call_command("drf_live_asyncapi", output=str(output), server="http://live.example.com")


def test_command_prints_json_by_default(capsys, document):
    call_command("drf_live_asyncapi")

    assert json.loads(capsys.readouterr().out) == document


def test_without_drf_spectacular_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "drf_spectacular", None)  # import drf_spectacular raises ImportError

    with pytest.raises(ImproperlyConfigured, match=r"pip install 'drf-live\[asyncapi\]'"):
        build_document(site)
    with pytest.raises(CommandError, match="drf-spectacular"):
        call_command("drf_live_asyncapi")


def test_viewset_without_retrieve_or_list_is_documented_without_them():
    class ReadOne(viewsets.GenericViewSet):
        serializer_class = TaskSerializer
        queryset = Task.objects.all()

        def retrieve(self, request: Any, *args: Any, **kwargs: Any) -> Any:
            raise NotImplementedError

    registry = Registry()
    registry.register(Task, TaskRegistration, viewset=ReadOne)

    document = build_document(registry)

    assert "list" not in document["operations"]  # answered not_allowed: no list in the viewset
    assert "api.task.CREATE_TASK" not in document["operations"]  # no collections without a list
    assert reply_keys(document, "retrieve") == {"api.task.RETRIEVED", "ERROR"}
