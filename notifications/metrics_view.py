"""The metrics endpoint: Prometheus's text format, for the scrapers ``METRICS_ADDRESSES`` or ``METRICS_TOKEN`` admit.

Mount it where your scraper looks (the example project: ``/metrics``)::

    path("metrics", metrics_view)

While ``METRICS`` is off it answers 404, as if it did not exist. On, it answers
a request from one of ``METRICS_ADDRESSES`` (loopback by default) that no proxy
forwarded, or one that carries ``Authorization: Bearer <METRICS_TOKEN>``;
anyone else gets 403. A proxy's request is never admitted by address: a proxy
on the same host would otherwise let anyone through it as 127.0.0.1.
"""

from __future__ import annotations

import hmac
import ipaddress

from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from . import metrics
from .conf import live_settings

#: Headers a proxy adds: a request that carries one is admitted by its token only.
FORWARDED = ("HTTP_FORWARDED", "HTTP_X_FORWARDED_FOR", "HTTP_X_REAL_IP")


@never_cache
@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    """``GET /metrics``: drf-live's metrics (and the process's own, in one process), when ``METRICS`` is on."""
    if not live_settings.METRICS:
        raise Http404("Metrics are off: DRF_LIVE['METRICS'].")
    if not admitted(request):
        return _text("Metrics are served to METRICS_ADDRESSES, or with Authorization: Bearer METRICS_TOKEN.", 403)
    if not metrics.recorder.enabled:
        return _text("prometheus-client is not installed: pip install 'drf-live[metrics]'.", 503)
    from prometheus_client.exposition import choose_encoder

    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return HttpResponse(encode(metrics.registry()), content_type=content_type)


def admitted(request: HttpRequest) -> bool:
    """Whether ``request`` may read the metrics: by its bearer token, or by its address."""
    token = live_settings.METRICS_TOKEN
    if token:
        keyword, _, given = request.headers.get("Authorization", "").partition(" ")
        if keyword.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), str(token).encode()):
            return True
    if any(name in request.META for name in FORWARDED):
        return False
    try:
        address = ipaddress.ip_address(str(request.META.get("REMOTE_ADDR", "")).strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in allowed_networks())


def allowed_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """``METRICS_ADDRESSES`` as networks (a bare address is a network of one)."""
    return [ipaddress.ip_network(str(entry), strict=False) for entry in live_settings.METRICS_ADDRESSES or ()]


def _text(message: str, status: int) -> HttpResponse:
    return HttpResponse(message + "\n", status=status, content_type="text/plain; charset=utf-8")
