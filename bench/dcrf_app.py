"""djangochannelsrestframework 1.3 on ``api.Task``: ``ObserverModelInstanceMixin``, as its README shows it.

Served by ``uvicorn bench.dcrf_app:application`` with ``bench.settings_nolive``
at ``/ws/dcrf/``. A client subscribes with
``{"action": "subscribe_instance", "pk": "<hashid>", "request_id": 1}``. The
writer imports this module too: dcrf connects its ``post_save`` receiver when
the consumer class body runs, so a process that does not import it publishes
nothing (dcrf issue #40).

No authentication and ``AllowAny``: dcrf gets the benefit of doing no access
checks, which drf-live does on every subscription.
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings_nolive")

from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402
from djangochannelsrestframework.generics import GenericAsyncAPIConsumer  # noqa: E402
from djangochannelsrestframework.observer.generics import ObserverModelInstanceMixin  # noqa: E402
from djangochannelsrestframework.permissions import AllowAny  # noqa: E402

from api.models import Task  # noqa: E402
from api.serializers import TaskSerializer  # noqa: E402


class TaskObserverConsumer(ObserverModelInstanceMixin, GenericAsyncAPIConsumer):
    queryset = Task.objects.all()
    serializer_class = TaskSerializer
    permission_classes = (AllowAny,)


application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": URLRouter([path("ws/dcrf/", TaskObserverConsumer.as_asgi())]),
    }
)
