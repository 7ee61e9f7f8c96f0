"""``settings_checks`` and ``layer_checks``: every DRF_LIVE key, and the channel layers, checked at start-up.

Each check gets a misconfiguration (``override_settings``) and must report it
with its id and a hint naming what to write; the example project's own
settings pass. One test runs ``manage.py check`` in a process of its own, as
a deployment would.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
from django.core import checks
from django.test.utils import override_settings

from notifications.conf import DEFAULTS
from notifications.layer_checks import check_channel_layers
from notifications.settings_checks import RULES, check_settings
from tests.servers import MANAGE, PYTHON, ROOT, process_env

REDIS_LAYER = "channels_redis.core.RedisChannelLayer"
GOOD_HOST = {"address": "redis://127.0.0.1:6379/0", "socket_timeout": None, "max_connections": 1000}


def reported(**drf_live: Any) -> list[checks.CheckMessage]:
    with override_settings(DRF_LIVE=drf_live):
        return check_settings()


def ids(messages: list[checks.CheckMessage]) -> list[str]:
    return [message.id or "" for message in messages]


def layer_messages(*hosts: Any, backend: str = REDIS_LAYER, **drf_live: Any) -> list[checks.CheckMessage]:
    layers = {"default": {"BACKEND": backend, "CONFIG": {"hosts": list(hosts)}}}
    with override_settings(CHANNEL_LAYERS=layers, DRF_LIVE=drf_live):
        return check_channel_layers()


# The example project, and every default ------------------------------------------------------


def test_the_example_project_passes_every_check() -> None:
    assert [message for message in checks.run_checks(tags=["drf_live"]) if message.id.startswith("drf_live.")] == []


def test_every_setting_has_a_rule_and_its_default_follows_it() -> None:
    assert set(RULES) == set(DEFAULTS)
    assert reported(**DEFAULTS) == []


def test_no_drf_live_setting_at_all_passes() -> None:
    with override_settings():
        from django.conf import settings

        del settings.DRF_LIVE
        assert check_settings() == []


# E100, E101: the dict and its keys -----------------------------------------------------------


def test_a_drf_live_that_is_not_a_dict_is_an_error() -> None:
    with override_settings(DRF_LIVE=[("STORE_URL", "memory")]):
        [message] = check_settings()

    assert message.id == "drf_live.E100"
    assert "must be a dict" in message.msg and "DRF_LIVE = {" in message.hint


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [("MAX_SUBSCRIPTION", "MAX_SUBSCRIPTIONS"), ("max_subscriptions", "MAX_SUBSCRIPTIONS"), ("STORE", "STORE_URL")],
)
def test_an_unknown_key_names_the_closest_known_one(key: str, suggestion: str) -> None:
    [message] = reported(**{key: 10})

    assert message.id == "drf_live.E101"
    assert message.level == checks.ERROR
    assert f'"{key}"' in message.msg and "ignores it" in message.msg
    assert message.hint.startswith(f'Did you mean "{suggestion}"?')
    assert f'"{suggestion}": {DEFAULTS[suggestion]!r}' in message.hint


def test_an_unknown_key_like_no_other_points_to_the_list() -> None:
    [message] = reported(COLOUR="blue")

    assert message.id == "drf_live.E101"
    assert "notifications/conf.py" in message.hint


# E102, E103: types and ranges ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("SUBSCRIBE_RATE", "fast"),
        ("MAX_SUBSCRIPTIONS", "200"),
        ("MAX_SUBSCRIPTIONS", 2.5),
        ("MAX_SUBSCRIPTIONS", True),
        ("ALLOW_ANONYMOUS", "yes"),
        ("ALLOW_ANONYMOUS", 1),
        ("AUTH_TIMEOUT", None),
        ("PREFIX", 7),
        ("ACTION_BUDGETS", [["ping", 2, 20]]),
        ("OUTBOX_SWEEP", "auto"),
    ],
)
def test_a_value_of_the_wrong_type_is_an_error(key: str, value: Any) -> None:
    [message] = reported(**{key: value})

    assert message.id == "drf_live.E102"
    assert f'DRF_LIVE["{key}"] is {value!r}' in message.msg
    assert f"({type(value).__name__})" in message.msg
    assert message.hint.startswith(f"Write {json.dumps(key)}: {DEFAULTS[key]!r} (the default)")


@pytest.mark.parametrize(
    ("key", "value", "rule"),
    [
        ("MAX_SUBSCRIPTIONS", -1, "a whole number at least 1"),
        ("MAX_SUBSCRIPTIONS", 0, "a whole number at least 1"),
        ("SUBSCRIBE_RATE", -5, "a number of requests per second at least 0"),
        ("AUTH_TIMEOUT", 0, "a number of seconds above 0"),
        ("HISTORY_LENGTH", -10, "a whole number of events at least 0"),
        ("MAX_UNAUTHENTICATED_SOCKETS", -1, "a whole number at least 0, or None"),
        ("SESSION_RECHECK_INTERVAL", -300, "a number of seconds above 0, or None"),
    ],
)
def test_a_value_out_of_range_is_an_error(key: str, value: Any, rule: str) -> None:
    [message] = reported(**{key: value})

    assert message.id == "drf_live.E103"
    assert message.msg == f'DRF_LIVE["{key}"] is {value!r}; it must be {rule}.'
    assert message.hint.startswith(f'Write "{key}": {DEFAULTS[key]!r} (the default)')


@pytest.mark.parametrize(
    "overrides",
    [
        {"SUBSCRIBE_BURST": 10**9, "AUTH_TIMEOUT": 3600, "MAX_FRAME_BYTES": 1048576},
        {"MAX_SUBSCRIPTIONS": 1e3, "HISTORY_LENGTH": 0, "OUTBOX_GRACE": 0.0, "RESUME_WINDOW": 0},
        {"MAX_UNAUTHENTICATED_SOCKETS": None, "LOG_ABUSE_BURST": None, "SESSION_RECHECK_INTERVAL": None},
        {"OUTBOX_SWEEP": False, "STORE_URL": "memory", "CLIENT_ADDRESS_HEADER": "X-Real-IP"},
    ],
)
def test_unusual_but_valid_values_pass(overrides: dict[str, Any]) -> None:
    assert reported(**overrides) == []


# E104 to E109: values with a format ---------------------------------------------------------


@pytest.mark.parametrize("prefix", ["my app", "drf:live", "", "live!", "p" * 51])
def test_a_prefix_that_cannot_start_channel_names_is_an_error(prefix: str) -> None:
    [message] = reported(PREFIX=prefix)

    assert message.id == "drf_live.E104"
    assert "letters, digits" in message.msg
    assert '"myapp-live"' in message.hint


@pytest.mark.parametrize("prefix", ["drf-live", "my_app.live", "p" * 50])
def test_a_prefix_of_name_characters_passes(prefix: str) -> None:
    assert reported(PREFIX=prefix) == []


@pytest.mark.parametrize("url", ["localhost:6379", "http://redis:6379", "redis://", "mem", "Memory"])
def test_a_store_url_that_is_no_redis_url_is_an_error(url: str) -> None:
    [message] = reported(STORE_URL=url)

    assert message.id == "drf_live.E105"
    assert '"redis://host:6379/0"' in message.hint and '"memory"' in message.hint


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379/0", "rediss://:secret@cache.example:6380/1", "unix:///run/redis.sock", "memory"]
)
def test_a_redis_url_or_memory_passes(url: str) -> None:
    assert reported(STORE_URL=url) == []


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("rest_framework.authentication.TokenAuthentcation", "cannot be imported"),
        ("no_such_module.Auth", "cannot be imported"),
        ("rest_framework.authentication.SessionAuthentication", "no authenticate_credentials()"),
    ],
)
def test_a_token_authentication_that_checks_no_token_is_an_error(path: str, says: str) -> None:
    [message] = reported(TOKEN_AUTHENTICATION=path)

    assert message.id == "drf_live.E106"
    assert says in message.msg
    assert "rest_framework.authentication.TokenAuthentication" in message.hint


@pytest.mark.parametrize("budget", [[2], [2, 20, 3], ["2", 20], [-1, 20], [2, 0], 5, {"rate": 2}])
def test_an_action_budget_that_is_not_a_rate_and_a_burst_is_an_error(budget: Any) -> None:
    [message] = reported(ACTION_BUDGETS={"ping": budget})

    assert message.id == "drf_live.E107"
    assert '"ping": [5, 20]' in message.hint


def test_an_action_budget_for_an_action_no_socket_sends_is_a_warning() -> None:
    [message] = reported(ACTION_BUDGETS={"pong": [2, 20], "ping": [1, 5], "*": [5, 20], "retrieve": (1, 3)})

    assert message.id == "drf_live.W108"
    assert message.level == checks.WARNING
    assert '"pong"' in message.msg
    assert message.hint.startswith('Did you mean "ping"?')


@pytest.mark.parametrize("header", ["X Real IP", "HTTP_X_REAL_IP", "X-Real-IP:", ""])
def test_a_client_address_header_that_is_no_header_name_is_an_error(header: str) -> None:
    [message] = reported(CLIENT_ADDRESS_HEADER=header)

    assert message.id == "drf_live.E109"
    assert '"X-Real-IP"' in message.hint


def test_every_mistake_is_reported_at_once() -> None:
    messages = reported(MAX_SUBSCRIPTION=5, SUBSCRIBE_RATE="fast", PREFIX="my app", MAX_SOCKETS_PER_USER=-1)

    assert sorted(ids(messages)) == ["drf_live.E101", "drf_live.E102", "drf_live.E103", "drf_live.E104"]
    assert all(message.hint for message in messages)


# W201, W202, E203: the channel layers ------------------------------------------------------------


def test_a_channels_redis_host_on_redis_py_defaults_gets_both_warnings() -> None:
    messages = layer_messages("redis://10.0.0.5:6379/0")

    assert ids(messages) == ["drf_live.W201", "drf_live.W202"]
    timeout, pool = messages
    assert 'CHANNEL_LAYERS["default"] host 1' in timeout.msg and "BZPOPMIN" in timeout.msg
    assert '"socket_timeout": None' in timeout.hint and "docs/deployment.md" in timeout.hint
    assert "MaxConnectionsError" in pool.msg
    assert '"max_connections"' in pool.hint


def test_a_channels_redis_host_with_the_documented_options_passes() -> None:
    assert layer_messages(GOOD_HOST, {**GOOD_HOST, "socket_timeout": 30}) == []


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ({"address": "redis://h:6379", "max_connections": 1000}, ["drf_live.W201"]),
        ({"address": "redis://h:6379", "socket_timeout": 5, "max_connections": 1000}, ["drf_live.W201"]),
        ({"address": "redis://h:6379", "socket_timeout": None}, ["drf_live.W202"]),
        ("redis://h:6379/0?socket_timeout=60&max_connections=500", []),
        ("redis://h:6379/0?max_connections=500", ["drf_live.W201"]),
        (("10.0.0.5", 6379), ["drf_live.W201", "drf_live.W202"]),
    ],
)
def test_each_default_left_is_its_own_warning(host: Any, expected: list[str]) -> None:
    assert ids(layer_messages(host, STORE_URL="memory")) == expected


def test_the_second_host_is_named_too() -> None:
    messages = layer_messages(GOOD_HOST, {"address": "redis://10.0.0.6:6379/0", "socket_timeout": None})

    assert ids(messages) == ["drf_live.W202"]
    assert "host 2" in messages[0].msg


def test_other_layers_are_not_channels_redis_core_and_pass() -> None:
    assert layer_messages(backend="channels.layers.InMemoryChannelLayer") == []
    assert layer_messages("redis://h:6379", backend="channels_redis.pubsub.RedisPubSubChannelLayer") == []


def test_a_sentinel_layer_without_a_store_url_gives_the_store_its_sentinels() -> None:
    sentinel = {"master_name": "mymaster", "sentinels": [("10.0.0.7", 26379)], "socket_timeout": None}

    assert layer_messages({**sentinel, "max_connections": 1000}) == []


def test_a_layer_host_the_store_cannot_read_without_a_store_url_is_an_error() -> None:
    unreadable = {"master_name": "mymaster", "sentinels": [], "socket_timeout": None, "max_connections": 1000}
    messages = layer_messages(unreadable)

    assert ids(messages) == ["drf_live.E203"]
    assert "lists no `sentinels`" in messages[0].msg
    assert 'DRF_LIVE["STORE_URL"]' in messages[0].hint
    assert layer_messages(unreadable, STORE_URL="redis://10.0.0.7:6379/0") == []


# End to end: `manage.py check`, as a deployment runs it ---------------------------------------


def test_manage_py_check_fails_on_a_misconfigured_drf_live_and_says_what_to_write(tmp_path: Any) -> None:
    settings = {"MAX_SUBSCRIPTION": 5, "SUBSCRIBE_RATE": "fast", "PREFIX": "my app"}
    env = process_env(f"sqlite:///{tmp_path / 'db.sqlite3'}", DRF_LIVE=json.dumps(settings))

    result = subprocess.run(
        [PYTHON, MANAGE, "check"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )

    assert result.returncode == 1, result.stdout + result.stderr
    output = result.stderr
    assert '(drf_live.E101) DRF_LIVE has an unknown key "MAX_SUBSCRIPTION"' in output
    assert 'HINT: Did you mean "MAX_SUBSCRIPTIONS"?' in output
    assert "(drf_live.E102) DRF_LIVE[\"SUBSCRIBE_RATE\"] is 'fast' (str)" in output
    assert "(drf_live.E104) DRF_LIVE[\"PREFIX\"] is 'my app'" in output


def test_manage_py_check_warns_about_a_channels_redis_layer_on_redis_py_defaults(tmp_path: Any) -> None:
    # The example project's own layer (REDIS_URL) sets the options: it passes.
    env = process_env(f"sqlite:///{tmp_path / 'db.sqlite3'}", "redis://127.0.0.1:6399/0")
    result = subprocess.run(
        [PYTHON, MANAGE, "check"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "drf_live." not in result.stdout + result.stderr
