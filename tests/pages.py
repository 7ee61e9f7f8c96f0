"""Lists on the wire are pages (the contract's section 6); a test that needs a list's objects reads them here."""

from __future__ import annotations

from typing import Any

PAGE_KEYS = {"count", "next", "previous", "results"}


def results(page: Any) -> list[Any]:
    """The objects of a list that fits on one page: a REST list, a collection's snapshot or a ``LISTED`` payload.

    Fails unless ``page`` has the paginated shape and is the whole list (no
    other page), so that a test reading "every object this user sees" can
    never be reading only the first 50 of them.
    """
    assert isinstance(page, dict) and page.keys() == PAGE_KEYS, f"Not a page of a list: {page!r}"
    assert page["next"] is None and page["previous"] is None, f"Not the whole list: {page!r}"
    assert page["count"] == len(page["results"]), f"Not the whole list: {page!r}"
    return list(page["results"])
