"""The example project with the task registration's ``subscribable_by`` taken away (``bench.collection``).

Everything else as in ``project.settings``: the relay then asks the viewset,
once per distinct subscribed user, whether each user may see a changed task,
as for a registration that declares nothing. Bench-only: the shipped
registration keeps its declaration.
"""

from project.settings import *  # noqa: F403
from project.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "bench.apps.Undeclared"]
