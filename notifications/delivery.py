"""What one subscription sends its socket for each event: a frame, nothing, or the end of it.

The relay decided, per user, who may see an event and encoded one frame per
audience (``audience``). Here a socket applies that verdict to its own user:
an object's subscriber gets its audience's frame or loses the subscription; a
collection's subscriber gets ``CREATE_*``, ``UPDATE_*`` or ``DELETE_*``
according to what the client holds, and nothing about a member it may not see.
Replays after ``since`` go through the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .frames import event_text
from .registration import Registration
from .targets import Target


class Verdict:
    """An outcome that is not a frame."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


#: The user lost access to the target: ``UNSUBSCRIBED`` with ``reason: "revoked"``, nothing more.
REVOKE = Verdict("revoke")
#: The socket cannot vouch for what it holds (an event missed, an epoch rotated): it must recover.
RESYNC = Verdict("resync")


@dataclass(eq=False, slots=True)
class Subscription:
    """One target a socket receives, and what its client holds of it.

    ``seq`` is the stream position the socket is up to date with (events at or
    before it are in the snapshot or were handled); ``sent`` is the seq of the
    last event the client was sent (or of its snapshot), which the next frame's
    ``meta.prev`` names when events in between were not for this user.
    ``members`` (collections) maps member ids to whether the client holds them;
    a member not in it is not held, unless ``complete`` is False (then unknown).
    ``pending`` holds the events that arrive while the snapshot is taken.
    """

    target: Target
    registration: Registration
    user: str
    seq: int = 0
    sent: int = 0
    epoch: str = ""
    members: dict[str, bool] | None = None
    complete: bool = True
    pending: list[tuple[dict[str, Any], int | None]] | None = field(default_factory=list)
    # The `since` and `epoch` the subscribe that made this subscription asked for (None: none).
    asked: tuple[int, str] | None = None


def outcome(subscription: Subscription, message: dict[str, Any]) -> str | Verdict | None:
    """The frame prefix this socket sends for ``message`` (None: nothing), or a verdict.

    Updates what the subscription knows the client holds.
    """
    kind = message.get("type")
    user = subscription.user
    if kind == "revoke":
        return REVOKE if user in message.get("users", ()) else None
    if kind == "rotate":
        return RESYNC
    if user in message.get("revoked", ()):
        return REVOKE
    frames = message["frames"]
    shown = message.get("shown")
    if shown is not None and user not in shown and user not in message.get("denied", ()):
        return RESYNC  # An event decided without this user: it cannot know what it missed.
    if not subscription.target.is_collection:
        if shown is None:
            return str(frames["delete"]["*"])
        prefixes = next(iter(frames.values()))
        return prefixes.get(shown[user])
    if message["kind"] == "event":
        return frames["event"].get(shown[user]) if shown is not None else None
    return _member_outcome(subscription, message, frames, shown)


def _member_outcome(
    subscription: Subscription, message: dict[str, Any], frames: dict[str, Any], shown: dict[str, str] | None
) -> str | Verdict | None:
    members = subscription.members if subscription.members is not None else {}
    subscription.members = members
    member = message["member"]
    held = members.get(member)
    if held is None and subscription.complete:
        held = False
    if shown is not None and subscription.user in shown:
        if held is None:
            variant = "update" if message.get("before") else "create"
        else:
            variant = "update" if held else "create"
        members[member] = True
        return frames[variant].get(shown[subscription.user])
    # Deleted, moved out, or hidden from this user now.
    if held is None and message.get("before"):
        return RESYNC  # Whether the client holds it is unknown; a DELETE could name a member it never saw.
    if subscription.complete or message["kind"] == "delete":
        members.pop(member, None)
    else:
        members[member] = False
    if held or (held is None and message.get("before")):
        return str(frames["delete"]["*"])
    return None


def text(subscription: Subscription, prefix: str, seq: int) -> str:
    """The frame to send, numbered ``seq``, with ``meta.prev`` when events were skipped since the last."""
    frame = event_text(prefix, seq, subscription.sent)
    subscription.sent = seq
    return frame


def replay(
    subscription: Subscription, earlier: list[dict[str, Any]], messages: list[dict[str, Any]]
) -> list[str] | None:
    """The frames that bring a client at ``subscription.sent`` up to date, or None if that is unsafe.

    None when the user lost the target in between, or a message was decided
    without them (they were not subscribed then), or a collection member's
    fate cannot be told without knowing what the client holds: the answer is
    then a fresh snapshot. ``earlier`` (the history up to ``since``) tells what
    the client held of each member as far as this user's verdicts go.
    """
    if subscription.target.is_collection:
        subscription.complete = False
        subscription.members = {}
        for message in earlier:
            shown = message.get("shown")
            member = message.get("member")
            if member is None or message.get("kind") == "event":
                continue
            if shown is not None and subscription.user in shown:
                subscription.members[member] = True
            elif subscription.user in message.get("denied", ()) or message.get("kind") == "delete":
                subscription.members[member] = False
    frames = []
    for message in messages:
        result = outcome(subscription, message)
        if isinstance(result, Verdict):
            return None
        if result is not None:
            frames.append(text(subscription, result, message["seq"]))
    return frames
