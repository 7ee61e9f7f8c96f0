"""``notifications.changes``: the writer's side hands a transaction to the relay only once its rows exist."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import transaction

from notifications import changes
from notifications.models import OutboxEntry
from notifications.relay import relay

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def kicks(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, int]]:
    """Each hand-over to the relay, with how many rows of that transaction existed at that moment."""
    seen: list[tuple[str, str, int]] = []

    def record(using: str, token: str) -> None:
        seen.append((using, token, OutboxEntry.objects.using(using).filter(txn=token).count()))

    monkeypatch.setattr(relay, "kick", record)
    return seen


def test_a_row_recorded_outside_a_transaction_exists_when_the_relay_is_told(kicks: Any) -> None:
    changes.record_control("close", {"to": ["drf-live.session.x"], "code": 4001})

    assert len(kicks) == 1
    _using, _token, rows = kicks[0]
    assert rows == 1


def test_rows_of_one_transaction_are_handed_over_once_it_commits(kicks: Any) -> None:
    with transaction.atomic():
        changes.record_control("close", {"to": ["a"], "code": 4001})
        changes.record_control("close", {"to": ["b"], "code": 4001})
        assert kicks == []

    tokens = {token for _using, token, _rows in kicks}
    assert len(tokens) == 1
    assert all(rows == 2 for _using, _token, rows in kicks)


def test_a_rolled_back_transaction_hands_nothing_over_and_leaves_no_row(kicks: Any) -> None:
    with transaction.atomic():
        changes.record_control("close", {"to": ["a"], "code": 4001})
        transaction.set_rollback(True)

    assert kicks == []
    assert not OutboxEntry.objects.exists()
