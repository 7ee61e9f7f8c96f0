"""Fixtures for the example REST API's tests."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient


@pytest.fixture
def client_for(token_for: Any) -> Any:
    """An ``APIClient`` authenticated as ``user`` by API token, as a non-browser client is."""

    def make(user: Any) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user)}")
        return client

    return make
