"""What one socket sends for each event (``notifications/delivery.py``): the per-user verdicts.

The messages are built by hand in the format ``audience.py`` commits
(``_decide_object``, ``_decide_member``; deletes come from ``_delete_entry``
itself), as the hub hands them over: with ``seq`` and ``epoch``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

from api.models import Task
from notifications import delivery
from notifications.audience import Unit, _delete_entry
from notifications.delivery import RESYNC, REVOKE, Subscription
from notifications.frames import event_prefix, event_text
from notifications.registry import site
from notifications.targets import Target

EPOCH = "a1b2c3d4.e5f6a7b8"
ALICE, BOB, CAROL = "1", "2", "3"
OBJECT = Target("api.task", id="Xk3Lp9q")
COLLECTION = Target.collection("api.task", {"project": "Pq7aaaa"})


def subscribe(target: Target, user: str, *, sent: int = 0, members: dict[str, bool] | None = None) -> Subscription:
    """A socket's subscription, up to date with seq ``sent``; ``members`` is what its client holds."""
    subscription = Subscription(target, site.get_for(Task), user, seq=sent, sent=sent, epoch=EPOCH)
    subscription.pending = None
    if members is not None:
        subscription.members = dict(members)
    return subscription


def object_prefix(audience: str, n: int = 0) -> str:
    payload = {"id": OBJECT.id, "title": f"{audience} {n}"}
    return event_prefix("UPDATE_TASK", payload, {**OBJECT.meta(), "changed": ["title"]})


def object_event(
    seq: int, shown: dict[str, str], *, revoked: list[str] | None = None, audiences: list[str] | None = None
) -> dict[str, Any]:
    """An object's update as ``_decide_object`` commits it: frames for the audiences that see a change."""
    if audiences is None:
        audiences = sorted(set(shown.values()))
    entry: dict[str, Any] = {
        "stream": OBJECT.stream,
        "kind": "update",
        "frames": {"update": {audience: object_prefix(audience, seq) for audience in audiences}},
        "shown": shown,
    }
    if revoked:
        entry["revoked"] = revoked
    return {"seq": seq, "epoch": EPOCH, **entry}


def member_prefixes(member: str) -> dict[str, str]:
    meta = {**COLLECTION.meta(), "id": member}
    payload = {"id": member, "title": f"task {member}"}
    return {
        "create": event_prefix("CREATE_TASK", payload, meta),
        "update": event_prefix("UPDATE_TASK", payload, {**meta, "changed": ["title"]}),
        "delete": event_prefix("DELETE_TASK", {"id": member}, meta),
    }


def member_event(
    seq: int,
    member: str,
    *,
    shown: Sequence[str] = (),
    denied: Sequence[str] = (),
    revoked: list[str] | None = None,
    before: bool = True,
    kind: str = "update",
) -> dict[str, Any]:
    """A member's change as ``_decide_member`` commits it; every shown user is in audience ``all``."""
    prefixes = member_prefixes(member)
    audiences = ["all"] if shown else []  # payloads exist only for audiences someone is shown in
    frames = {
        "create": {audience: prefixes["create"] for audience in audiences},
        "update": {audience: prefixes["update"] for audience in audiences},
        "delete": {"*": prefixes["delete"]},
    }
    entry: dict[str, Any] = {
        "stream": COLLECTION.stream,
        "kind": kind,
        "member": member,
        "before": before,
        "frames": frames,
        "shown": {user: "all" for user in shown},
        "denied": list(denied),
    }
    if revoked:
        entry["revoked"] = revoked
    return {"seq": seq, "epoch": EPOCH, **entry}


def deleted(seq: int, target: Target, object_id: str, *, before: bool = True) -> dict[str, Any]:
    """A delete, made by ``audience._delete_entry`` itself (no verdicts: the row is gone)."""
    unit = Unit(site.get_for(Task), target, "delete", object_id, before=before)
    return {"seq": seq, "epoch": EPOCH, **_delete_entry(unit)}


def decoded(frame: str) -> dict[str, Any]:
    value = json.loads(frame)
    assert isinstance(value, dict)
    return value


# An object -----------------------------------------------------------------------------


def test_an_object_subscriber_gets_the_frame_of_its_audience() -> None:
    message = object_event(1, {ALICE: "self", BOB: "others"})

    assert delivery.outcome(subscribe(OBJECT, ALICE), message) == object_prefix("self", 1)
    assert delivery.outcome(subscribe(OBJECT, BOB), message) == object_prefix("others", 1)


def test_an_object_subscriber_whose_audience_saw_no_visible_change_gets_nothing() -> None:
    message = object_event(1, {ALICE: "self", BOB: "others"}, audiences=["self"])

    assert delivery.outcome(subscribe(OBJECT, BOB), message) is None
    assert delivery.outcome(subscribe(OBJECT, ALICE), message) == object_prefix("self", 1)


def test_an_object_subscriber_who_may_no_longer_see_it_is_revoked() -> None:
    message = object_event(1, {ALICE: "self"}, revoked=[BOB])

    assert delivery.outcome(subscribe(OBJECT, BOB), message) is REVOKE


def test_an_object_event_decided_without_the_user_makes_the_socket_resync() -> None:
    # CAROL was not registered when the relay claimed the stream: what she may see of it is unknown.
    message = object_event(1, {ALICE: "self"}, revoked=[BOB])

    assert delivery.outcome(subscribe(OBJECT, CAROL), message) is RESYNC


def test_an_object_delete_reaches_every_subscriber() -> None:
    message = deleted(2, OBJECT, str(OBJECT.id))

    for user in (ALICE, BOB):
        result = delivery.outcome(subscribe(OBJECT, user), message)
        assert isinstance(result, str)
        frame = decoded(event_text(result, 2))
        assert frame["type"] == "DELETE_TASK"
        assert frame["payload"] == {"id": OBJECT.id}


def test_an_application_event_on_an_object_goes_to_the_audience_of_the_user() -> None:
    prefixes = {"all": event_prefix("TASK_PINGED", {"by": "alice"}, OBJECT.meta())}
    message = {
        "seq": 1,
        "epoch": EPOCH,
        "stream": OBJECT.stream,
        "kind": "event",
        "frames": {"event": prefixes},
        "shown": {ALICE: "all"},
        "revoked": [BOB],
    }

    assert delivery.outcome(subscribe(OBJECT, ALICE), message) == prefixes["all"]
    assert delivery.outcome(subscribe(OBJECT, BOB), message) is REVOKE


# A collection, live (the socket knows what its client holds) -----------------------------


def test_a_member_shown_to_a_user_is_created_then_updated() -> None:
    subscription = subscribe(COLLECTION, ALICE, members={})

    assert (
        delivery.outcome(subscription, member_event(1, "t1", shown=[ALICE], before=False, kind="create"))
        == (member_prefixes("t1")["create"])
    )
    assert subscription.members == {"t1": True}
    assert delivery.outcome(subscription, member_event(2, "t1", shown=[ALICE])) == member_prefixes("t1")["update"]


def test_a_member_a_user_newly_sees_is_created_for_them() -> None:
    # The member was in the collection before (``before``), hidden from ALICE; now she sees it.
    subscription = subscribe(COLLECTION, ALICE, members={})

    assert delivery.outcome(subscription, member_event(1, "t1", shown=[ALICE])) == member_prefixes("t1")["create"]


def test_a_member_hidden_from_a_user_who_holds_it_is_deleted() -> None:
    subscription = subscribe(COLLECTION, ALICE, members={"t1": True})

    result = delivery.outcome(subscription, member_event(1, "t1", shown=[BOB], denied=[ALICE]))

    assert result == member_prefixes("t1")["delete"]
    assert "t1" not in (subscription.members or {})
    # Shown again later: created again.
    assert delivery.outcome(subscription, member_event(2, "t1", shown=[ALICE])) == member_prefixes("t1")["create"]


def test_a_member_a_user_never_held_sends_nothing_when_hidden() -> None:
    subscription = subscribe(COLLECTION, ALICE, members={})

    assert delivery.outcome(subscription, member_event(1, "t1", shown=[BOB], denied=[ALICE])) is None
    assert subscription.members == {}


def test_a_deleted_member_is_deleted_only_for_clients_that_hold_it() -> None:
    holder = subscribe(COLLECTION, ALICE, members={"t1": True})
    other = subscribe(COLLECTION, BOB, members={"t2": True})
    message = deleted(3, COLLECTION, "t1")

    result = delivery.outcome(holder, message)
    assert isinstance(result, str)
    frame = decoded(event_text(result, 3))
    assert (frame["type"], frame["payload"], frame["meta"]["id"]) == ("DELETE_TASK", {"id": "t1"}, "t1")
    assert holder.members == {}
    assert delivery.outcome(other, message) is None
    assert other.members == {"t2": True}


def test_a_collection_subscriber_who_lost_the_collection_is_revoked() -> None:
    message = member_event(1, "t1", shown=[ALICE], revoked=[BOB])

    assert delivery.outcome(subscribe(COLLECTION, BOB, members={"t1": True}), message) is REVOKE


def test_a_member_event_decided_without_the_user_makes_the_socket_resync() -> None:
    message = member_event(1, "t1", shown=[ALICE], denied=[BOB])

    assert delivery.outcome(subscribe(COLLECTION, CAROL, members={}), message) is RESYNC


def test_an_application_event_on_a_collection_goes_to_the_audience_of_the_user() -> None:
    prefixes = {"all": event_prefix("PROJECT_PINGED", {"by": "alice"}, COLLECTION.meta())}
    message = {
        "seq": 1,
        "epoch": EPOCH,
        "stream": COLLECTION.stream,
        "kind": "event",
        "member": "t1",
        "before": True,
        "frames": {"event": prefixes},
        "shown": {ALICE: "all"},
        "denied": [],
        "revoked": [BOB],
    }

    assert delivery.outcome(subscribe(COLLECTION, ALICE, members={}), message) == prefixes["all"]
    assert delivery.outcome(subscribe(COLLECTION, BOB, members={}), message) is REVOKE


# A collection whose client's holdings are not all known (after a replay) -------------------


def incomplete(members: dict[str, bool] | None = None) -> Subscription:
    subscription = subscribe(COLLECTION, ALICE, members=members or {})
    subscription.complete = False
    return subscription


@pytest.mark.parametrize(
    ("before", "variant"),
    [(True, "update"), (False, "create")],
    ids=["member-before", "new-member"],
)
def test_an_unknown_member_shown_to_the_user_is_updated_if_it_was_a_member_before(before: bool, variant: str) -> None:
    subscription = incomplete()

    assert (
        delivery.outcome(subscription, member_event(1, "t1", shown=[ALICE], before=before))
        == (member_prefixes("t1")[variant])
    )
    assert subscription.members == {"t1": True}


def test_an_unknown_member_hidden_from_the_user_makes_the_socket_resync() -> None:
    # A DELETE could name a member the client never saw; sending nothing could leave one it holds.
    assert delivery.outcome(incomplete(), member_event(1, "t1", shown=[BOB], denied=[ALICE])) is RESYNC


def test_an_unknown_member_that_was_not_a_member_before_and_stays_hidden_sends_nothing() -> None:
    subscription = incomplete()

    assert delivery.outcome(subscription, member_event(1, "t1", shown=[BOB], denied=[ALICE], before=False)) is None
    assert subscription.members == {"t1": False}


def test_a_member_known_not_to_be_held_is_created_when_shown() -> None:
    subscription = incomplete({"t1": False})

    assert delivery.outcome(subscription, member_event(1, "t1", shown=[ALICE])) == member_prefixes("t1")["create"]


# Messages without a seq, and rotation ----------------------------------------------------


def test_a_revoke_message_revokes_only_the_users_it_names() -> None:
    message = {"type": "revoke", "users": [BOB]}

    assert delivery.outcome(subscribe(OBJECT, BOB), message) is REVOKE
    assert delivery.outcome(subscribe(COLLECTION, BOB, members={}), message) is REVOKE
    assert delivery.outcome(subscribe(OBJECT, ALICE), message) is None


@pytest.mark.parametrize("target", [OBJECT, COLLECTION], ids=["object", "collection"])
def test_a_rotated_stream_makes_every_socket_resync(target: Target) -> None:
    message = {"type": "rotate", "epoch": "f0f0f0f0.01020304"}

    assert delivery.outcome(subscribe(target, ALICE, members={}), message) is RESYNC


# Frames -----------------------------------------------------------------------------------


def test_text_names_prev_only_when_events_were_skipped() -> None:
    subscription = subscribe(OBJECT, ALICE, sent=4)

    next_one = decoded(delivery.text(subscription, object_prefix("self", 5), 5))
    assert next_one == {
        "type": "UPDATE_TASK",
        "payload": {"id": OBJECT.id, "title": "self 5"},
        "meta": {"model": "api.task", "id": OBJECT.id, "changed": ["title"], "seq": 5},
    }
    assert subscription.sent == 5

    after_a_gap = decoded(delivery.text(subscription, object_prefix("self", 8), 8))
    assert after_a_gap["meta"] == {"model": "api.task", "id": OBJECT.id, "changed": ["title"], "seq": 8, "prev": 5}
    assert subscription.sent == 8


# Replay -------------------------------------------------------------------------------------


def test_replay_sends_the_frames_of_the_user_in_order_with_prev_after_skipped_events() -> None:
    subscription = subscribe(OBJECT, BOB, sent=2)
    messages = [
        object_event(3, {ALICE: "self", BOB: "others"}),
        object_event(4, {ALICE: "self", BOB: "others"}, audiences=["self"]),  # nothing BOB sees changed
        object_event(5, {ALICE: "self", BOB: "others"}),
    ]

    frames = delivery.replay(subscription, [], messages)

    assert frames is not None
    assert [decoded(frame)["payload"]["title"] for frame in frames] == ["others 3", "others 5"]
    assert [decoded(frame)["meta"].get("prev") for frame in frames] == [None, 3]
    assert [decoded(frame)["meta"]["seq"] for frame in frames] == [3, 5]
    assert subscription.sent == 5


def test_replay_of_nothing_is_an_empty_recovery() -> None:
    assert delivery.replay(subscribe(OBJECT, BOB, sent=2), [], []) == []


def test_replay_is_unsafe_when_the_user_lost_the_object_in_between() -> None:
    messages = [object_event(3, {BOB: "others"}), object_event(4, {ALICE: "self"}, revoked=[BOB])]

    assert delivery.replay(subscribe(OBJECT, BOB, sent=2), [], messages) is None


def test_replay_is_unsafe_when_an_event_was_decided_without_the_user() -> None:
    # BOB was not subscribed (within RESUME_WINDOW) when event 4 was decided.
    messages = [object_event(3, {BOB: "others"}), object_event(4, {ALICE: "self"})]

    assert delivery.replay(subscribe(OBJECT, BOB, sent=2), [], messages) is None


def test_replay_of_a_collection_learns_from_earlier_events_what_the_client_held() -> None:
    subscription = subscribe(COLLECTION, ALICE, sent=2)
    earlier = [
        member_event(1, "held", shown=[ALICE], before=False, kind="create"),
        member_event(2, "hidden", shown=[BOB], denied=[ALICE], before=False, kind="create"),
    ]
    messages = [
        member_event(3, "held", shown=[BOB], denied=[ALICE]),  # moved out of her list: DELETE
        member_event(4, "hidden", shown=[ALICE, BOB]),  # she sees it now, never held it: CREATE
        member_event(5, "older", shown=[ALICE]),  # a member from before the history: UPDATE
        member_event(6, "new", shown=[BOB], denied=[ALICE], before=False),  # never hers: nothing
    ]

    frames = delivery.replay(subscription, earlier, messages)

    assert frames is not None
    assert [(decoded(frame)["type"], decoded(frame)["meta"]["id"]) for frame in frames] == [
        ("DELETE_TASK", "held"),
        ("CREATE_TASK", "hidden"),
        ("UPDATE_TASK", "older"),
    ]
    assert [decoded(frame)["meta"]["seq"] for frame in frames] == [3, 4, 5]
    assert subscription.members == {"held": False, "hidden": True, "older": True, "new": False}


def test_replay_of_a_collection_is_unsafe_when_a_member_the_client_may_hold_is_hidden() -> None:
    messages = [member_event(3, "older", shown=[BOB], denied=[ALICE])]

    assert delivery.replay(subscribe(COLLECTION, ALICE, sent=2), [], messages) is None


def test_replay_of_a_collection_deletes_a_member_the_client_held() -> None:
    earlier = [member_event(1, "t1", shown=[ALICE], before=False, kind="create")]

    frames = delivery.replay(subscribe(COLLECTION, ALICE, sent=1), earlier, [deleted(2, COLLECTION, "t1")])

    assert frames is not None
    assert [(decoded(frame)["type"], decoded(frame)["meta"]["seq"]) for frame in frames] == [("DELETE_TASK", 2)]


def test_replay_of_a_collection_sends_nothing_about_a_deleted_member_the_user_was_denied() -> None:
    earlier = [member_event(1, "private", shown=[BOB], denied=[ALICE], before=False, kind="create")]

    frames = delivery.replay(subscribe(COLLECTION, ALICE, sent=1), earlier, [deleted(2, COLLECTION, "private")])

    assert frames == []


def test_replay_never_names_a_deleted_member_the_history_does_not_show_the_user_held() -> None:
    # docs/delivery.md: "A member a user never saw never reaches them, not even as an id", and a
    # member whose fate depends on whether the client held it means `recovered: false`.
    frames = delivery.replay(subscribe(COLLECTION, ALICE, sent=1), [], [deleted(2, COLLECTION, "private")])

    assert frames is None
