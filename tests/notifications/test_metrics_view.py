"""The metrics endpoint (``notifications/metrics_view.py``): off is 404; on, loopback or the token, nobody else.

The example project mounts it at ``/metrics``; Django's test client speaks from 127.0.0.1.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from notifications import metrics
from notifications.models import OutboxEntry

pytestmark = pytest.mark.django_db

TOKEN = "a-long-random-scrape-token"


@pytest.fixture
def client() -> Client:
    return Client()


def scraped(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def test_off_the_endpoint_is_not_found(client: Client, settings: Any) -> None:
    settings.DRF_LIVE = {}
    assert client.get("/metrics").status_code == 404
    settings.DRF_LIVE = {"METRICS": False, "METRICS_TOKEN": TOKEN}
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 404


def test_on_loopback_reads_the_metrics_in_prometheus_text_format(client: Client, settings: Any) -> None:
    settings.DRF_LIVE = {"METRICS": True}
    OutboxEntry.objects.create(txn="t", created=0.0, kind="update", model="api.task", object_id="x")

    response = client.get("/metrics")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    assert "no-cache" in response["Cache-Control"]
    values = scraped(response.content)
    assert values[("drf_live_outbox_rows", (("database", "default"),))] == 1
    assert values[("drf_live_outbox_oldest_age_seconds", (("database", "default"),))] > 1_000_000
    assert ("drf_live_sockets_open", ()) in values
    # Every label value known at start is shown from the start (a rate needs the series before its first count).
    for name, labels in [
        ("drf_live_errors_total", (("code", "throttled"),)),
        ("drf_live_closes_total", (("code", "4031"),)),
        ("drf_live_handshakes_refused_total", (("status", "429"),)),
        ("drf_live_subscriptions", (("model", "api.task"),)),
        ("drf_live_events_published_total", (("kind", "touch"), ("model", "api.project"))),
    ]:
        assert (name, labels) in values, name
    assert client.get("/metrics/").status_code == 200


def test_openmetrics_is_served_to_who_asks_for_it(client: Client, settings: Any) -> None:
    settings.DRF_LIVE = {"METRICS": True}
    response = client.get("/metrics", HTTP_ACCEPT="application/openmetrics-text; version=1.0.0")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/openmetrics-text")
    assert response.content.endswith(b"# EOF\n")


@pytest.mark.parametrize(
    "remote, headers, allowed",
    [
        ("127.0.0.1", {}, True),
        ("::1", {}, True),
        ("::ffff:127.0.0.1", {}, True),
        ("10.1.2.3", {}, False),
        ("127.0.0.1", {"HTTP_X_FORWARDED_FOR": "203.0.113.9"}, False),  # a proxy on this host forwarded it
        ("127.0.0.1", {"HTTP_FORWARDED": "for=203.0.113.9"}, False),
        ("127.0.0.1", {"HTTP_X_REAL_IP": "127.0.0.1"}, False),
        ("not an address", {}, False),
    ],
)
def test_by_default_only_loopback_requests_no_proxy_forwarded_are_admitted(
    client: Client, settings: Any, remote: str, headers: dict[str, str], allowed: bool
) -> None:
    settings.DRF_LIVE = {"METRICS": True}
    response = client.get("/metrics", REMOTE_ADDR=remote, **headers)
    assert response.status_code == (200 if allowed else 403)
    if not allowed:
        assert b"METRICS_TOKEN" in response.content


def test_metrics_addresses_name_the_networks_admitted(client: Client, settings: Any) -> None:
    settings.DRF_LIVE = {"METRICS": True, "METRICS_ADDRESSES": ["10.0.0.0/8", "192.0.2.7"]}
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="192.0.2.7").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="192.0.2.8").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 403


def test_the_token_admits_from_anywhere_and_nothing_else_does_without_addresses(client: Client, settings: Any) -> None:
    settings.DRF_LIVE = {"METRICS": True, "METRICS_ADDRESSES": [], "METRICS_TOKEN": TOKEN}
    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Token {TOKEN}").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"bearer {TOKEN}").status_code == 200
    forwarded = {"REMOTE_ADDR": "198.51.100.1", "HTTP_X_FORWARDED_FOR": "203.0.113.9"}
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}", **forwarded).status_code == 200


def test_only_reads_are_allowed(client: Client, settings: Any) -> None:
    settings.DRF_LIVE = {"METRICS": True}
    assert client.post("/metrics").status_code == 405
    assert client.head("/metrics").status_code == 200


def test_on_without_prometheus_client_says_what_to_install(
    client: Client, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.DRF_LIVE = {"METRICS": True}
    monkeypatch.setattr(metrics, "recorder", metrics.NOOP)  # as configure() leaves it without the library

    response = client.get("/metrics")

    assert response.status_code == 503
    assert b"pip install 'drf-live[metrics]'" in response.content
