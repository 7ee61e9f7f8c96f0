"""System checks of the ``DRF_LIVE`` dict: every key known, of the right type, in range.

A misspelled key or a value of the wrong kind is otherwise read as the default,
or fails at the first socket, far from the line that caused it; ``manage.py
check`` (and ``migrate``, ``runserver``) reports it instead, with what to write.

========================  ===================================================================
drf_live.E100             ``DRF_LIVE`` is not a dict
drf_live.E101             an unknown key (the hint names the closest known one)
drf_live.E102             a value of the wrong type (a string for a number, say)
drf_live.E103             a value out of range (a negative limit, a zero interval)
drf_live.E104             a ``PREFIX`` that cannot start channel names and Redis keys
drf_live.E105             a ``STORE_URL`` that is neither a Redis URL nor ``"memory"``
drf_live.E106             a ``TOKEN_AUTHENTICATION`` that cannot be imported or checks no token
drf_live.E107             ``ACTION_BUDGETS`` entries that are not ``[rate, burst]``
drf_live.W108             ``ACTION_BUDGETS`` names an action no socket can send
drf_live.E109             a ``CLIENT_ADDRESS_HEADER`` that is not a header name
========================  ===================================================================

The channel layers next to drf-live have checks of their own (``layer_checks``).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core import checks
from django.utils.module_loading import import_string

from .conf import DEFAULTS

# The rules -----------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """What one setting accepts: a kind of value, a lower bound, and whether None is allowed."""

    kind: str  # "number", "whole", "bool", "str", "dict", "list", "store" (a str, a dict or a list of them)
    minimum: float | None = None
    above: bool = False  # the minimum itself is refused
    nullable: bool = False
    unit: str = ""

    def type_ok(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        if isinstance(value, bool):
            return self.kind == "bool"
        if self.kind == "number":
            return isinstance(value, (int, float))
        if self.kind == "whole":
            return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        if self.kind == "store":
            return isinstance(value, (str, dict, list, tuple))
        if self.kind == "list":
            return isinstance(value, (list, tuple))
        return isinstance(value, {"bool": bool, "str": str, "dict": dict}[self.kind])

    def range_ok(self, value: Any) -> bool:
        if value is None or self.minimum is None:
            return True
        return value > self.minimum if self.above else value >= self.minimum

    def describe(self) -> str:
        kind = {
            "number": "a number",
            "whole": "a whole number",
            "bool": "True or False",
            "str": "a string",
            "dict": "a dict",
            "list": "a list",
            "store": "a Redis URL, a host dict, or a list of them",
        }[self.kind]
        if self.unit:
            kind += f" of {self.unit}"
        if self.minimum is not None:
            kind += f" {'above' if self.above else 'at least'} {self.minimum:g}"
        if self.nullable:
            kind += ", or None"
        return kind


def _seconds(*, above: bool = True, nullable: bool = False) -> Rule:
    return Rule("number", 0, above=above, nullable=nullable, unit="seconds")


#: One rule per key of ``conf.DEFAULTS`` (a test keeps them in step).
RULES: dict[str, Rule] = {
    "AUTH_TIMEOUT": _seconds(),
    "ALLOW_ANONYMOUS": Rule("bool"),
    "TOKEN_AUTHENTICATION": Rule("str"),
    "STORE_URL": Rule("store", nullable=True),
    "PREFIX": Rule("str"),
    "HISTORY_LENGTH": Rule("whole", 0, unit="events"),
    "HISTORY_TTL": _seconds(),
    "MAX_FRAME_BYTES": Rule("whole", 1, unit="bytes"),
    "MAX_SUBSCRIPTIONS": Rule("whole", 1),
    "SUBSCRIBE_RATE": Rule("number", 0, unit="requests per second"),
    "SUBSCRIBE_BURST": Rule("number", 1, unit="requests"),
    "ERROR_RATE": Rule("number", 0, unit="errors per second"),
    "ERROR_BURST": Rule("number", 1, unit="errors"),
    "MAX_SOCKETS_PER_USER": Rule("whole", 1),
    "SOCKET_LEASE": _seconds(),
    "SEND_QUEUE_LIMIT": Rule("whole", 1, unit="frames"),
    "SEND_TIMEOUT": _seconds(),
    "RESUME_WINDOW": _seconds(above=False),
    "OUTBOX_GRACE": _seconds(above=False),
    "OUTBOX_SWEEP": Rule("bool", nullable=True),
    "OUTBOX_LEASE": _seconds(),
    "OUTBOX_SWEEP_INTERVAL": _seconds(),
    "OUTBOX_SWEEP_BATCH": Rule("whole", 1, unit="rows"),
    "OUTBOX_RETRY_DELAY": _seconds(above=False),
    "OUTBOX_MAX_ATTEMPTS": Rule("whole", 1),
    "OUTBOX_LIMIT": Rule("whole", 1, unit="rows"),
    "CLAIM_TIMEOUT": _seconds(),
    "ACTION_BUDGETS": Rule("dict"),
    "MAX_UNAUTHENTICATED_SOCKETS": Rule("whole", 0, nullable=True),
    "MAX_UNAUTHENTICATED_SOCKETS_PER_ADDRESS": Rule("whole", 0, nullable=True),
    "CLIENT_ADDRESS_HEADER": Rule("str", nullable=True),
    "MAX_AUTH_FAILURES": Rule("whole", 1),
    "AUTH_FAILURE_RATE": Rule("number", 0, unit="failures per second"),
    "AUTH_FAILURE_BURST": Rule("number", 1, unit="failures"),
    "SESSION_RECHECK_INTERVAL": _seconds(nullable=True),
    "LOG_ABUSE_BURST": Rule("whole", 0, nullable=True, unit="lines"),
    "LOG_ABUSE_INTERVAL": _seconds(),
    "ASYNCAPI_URL_ENABLED": Rule("bool", nullable=True),
    "ASYNCAPI_INFO": Rule("dict"),
    "INSPECTOR_ENABLED": Rule("bool", nullable=True),
    # METRICS_ADDRESSES' entries and METRICS' extra are checked by checks.check_metrics.
    "METRICS": Rule("bool", nullable=True),
    "METRICS_ADDRESSES": Rule("list"),
    "METRICS_TOKEN": Rule("str", nullable=True),
}

# channels' rule for group names (letters, digits, "-", "_", "."), and room after the prefix for
# the model, the id and the key's suffix within its 99 characters.
_PREFIX = re.compile(r"^[A-Za-z0-9_.-]+$")
MAX_PREFIX = 50
# RFC 9110 token characters: what a header name may hold.
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
STORE_SCHEMES = ("redis", "rediss", "unix")


def _example(key: str) -> str:
    return f'"{key}": {DEFAULTS[key]!r}' if DEFAULTS[key] is not None else f'"{key}": None'


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# The DRF_LIVE dict ------------------------------------------------------------------


@checks.register("drf_live")
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Every key of ``DRF_LIVE``: known, of the right type, in range; and the few with a format."""
    configured = getattr(settings, "DRF_LIVE", None)
    if configured is None:
        return []
    if not isinstance(configured, dict):
        return [
            checks.Error(
                f"DRF_LIVE must be a dict of drf-live's settings, not {type(configured).__name__}.",
                hint='Write DRF_LIVE = {"STORE_URL": "redis://127.0.0.1:6379/0"}, say, or leave it out.',
                id="drf_live.E100",
            )
        ]
    messages: list[checks.CheckMessage] = []
    for key, value in configured.items():
        if key not in DEFAULTS:
            messages.append(_unknown_key(key))
            continue
        rule = RULES.get(key)
        if rule is None:
            continue
        if not rule.type_ok(value):
            messages.append(
                checks.Error(
                    f'DRF_LIVE["{key}"] is {_shown(value)} ({type(value).__name__}); it must be {rule.describe()}.',
                    hint=f"Write {_example(key)} (the default), or another {rule.describe()}.",
                    id="drf_live.E102",
                )
            )
            continue
        if not rule.range_ok(value):
            messages.append(
                checks.Error(
                    f'DRF_LIVE["{key}"] is {_shown(value)}; it must be {rule.describe()}.',
                    hint=f"Write {_example(key)} (the default), or another {rule.describe()}.",
                    id="drf_live.E103",
                )
            )
            continue
        format_check = FORMATS.get(key)
        if format_check is not None and value is not None:
            messages.extend(format_check(value))
    return messages


def _unknown_key(key: Any) -> checks.CheckMessage:
    close = difflib.get_close_matches(str(key).upper(), DEFAULTS, n=1, cutoff=0.6)
    if close:
        hint = f'Did you mean "{close[0]}"? Write {_example(close[0])}, say.'
    else:
        hint = "drf-live's settings are listed in notifications/conf.py (DEFAULTS) and in the README."
    return checks.Error(f'DRF_LIVE has an unknown key "{key}": drf-live ignores it.', hint=hint, id="drf_live.E101")


def _check_prefix(value: str) -> list[checks.CheckMessage]:
    if _PREFIX.match(value) and len(value) <= MAX_PREFIX:
        return []
    return [
        checks.Error(
            f'DRF_LIVE["PREFIX"] is {_shown(value)}: it starts every channel name and Redis key, so it may '
            f"hold only letters, digits, '-', '_' and '.', at most {MAX_PREFIX} of them.",
            hint=f'Write {_example("PREFIX")}, or a name such as "myapp-live".',
            id="drf_live.E104",
        )
    ]


def _check_store_url(value: Any) -> list[checks.CheckMessage]:
    from . import shards

    if value == "memory":
        return []
    try:
        shards.parse(value)
    except shards.ShardConfigError as error:
        return [
            checks.Error(
                f'DRF_LIVE["STORE_URL"] is {_shown(value)}, which drf-live cannot read: {error}',
                hint='Write "redis://host:6379/0" (rediss:// for TLS, redis://:password@host:6379/0 with a '
                'password), several of them comma-separated (shards), "sentinel://h1:26379,h2:26379/mymaster/0", '
                '"memory" for one process, or None to use every host of the default channels_redis layer.',
                id="drf_live.E105",
            )
        ]
    return []


def _check_token_authentication(value: str) -> list[checks.CheckMessage]:
    hint = (
        'Write "rest_framework.authentication.TokenAuthentication" (the default) or the dotted path of '
        "your DRF authentication class that has authenticate_credentials(key)."
    )
    try:
        authentication = import_string(value)
    except ImportError as error:
        return [
            checks.Error(
                f'DRF_LIVE["TOKEN_AUTHENTICATION"] is {_shown(value)}, which cannot be imported: {error}.',
                hint=hint,
                id="drf_live.E106",
            )
        ]
    if not callable(getattr(authentication, "authenticate_credentials", None)):
        return [
            checks.Error(
                f'DRF_LIVE["TOKEN_AUTHENTICATION"] is {_shown(value)}, which has no authenticate_credentials(): '
                "drf-live checks a socket's token with it.",
                hint=hint,
                id="drf_live.E106",
            )
        ]
    return []


def _check_action_budgets(value: dict[Any, Any]) -> list[checks.CheckMessage]:
    from .consumers import NotificationConsumer

    actions = [*NotificationConsumer.actions, "*"]
    messages: list[checks.CheckMessage] = []
    for action, budget in value.items():
        pair = budget if isinstance(budget, (list, tuple)) else None
        if (
            pair is None
            or len(pair) != 2
            or not all(isinstance(item, (int, float)) and not isinstance(item, bool) for item in pair)
            or pair[0] < 0
            or pair[1] < 1
        ):
            messages.append(
                checks.Error(
                    f'DRF_LIVE["ACTION_BUDGETS"]["{action}"] is {_shown(budget)}; it must be [rate per second, burst] '
                    "with a rate of at least 0 and a burst of at least 1.",
                    hint=f'Write "{action}": [5, 20], say: five a second on average, twenty at once.',
                    id="drf_live.E107",
                )
            )
        if action not in actions:
            close = difflib.get_close_matches(str(action), actions, n=1, cutoff=0.6)
            messages.append(
                checks.Warning(
                    f'DRF_LIVE["ACTION_BUDGETS"] names "{action}", which is no action a socket can send.',
                    hint=(f'Did you mean "{close[0]}"? ' if close else "")
                    + f'The actions are {", ".join(actions)} ("*": every action not named).',
                    id="drf_live.W108",
                )
            )
    return messages


def _check_client_address_header(value: str) -> list[checks.CheckMessage]:
    if _HEADER_NAME.match(value) and not value.upper().startswith("HTTP_"):
        return []
    return [
        checks.Error(
            f'DRF_LIVE["CLIENT_ADDRESS_HEADER"] is {_shown(value)}, which is not an HTTP header name.',
            hint='Write the header as your proxy sends it, e.g. "X-Real-IP" (not "HTTP_X_REAL_IP"), or None.',
            id="drf_live.E109",
        )
    ]


FORMATS: dict[str, Callable[[Any], list[checks.CheckMessage]]] = {
    "PREFIX": _check_prefix,
    "STORE_URL": _check_store_url,
    "TOKEN_AUTHENTICATION": _check_token_authentication,
    "ACTION_BUDGETS": _check_action_budgets,
    "CLIENT_ADDRESS_HEADER": _check_client_address_header,
}
