"""The example project without drf-live: its app is installed (its models exist), but registers nothing.

``LiveModel.save`` then finds no registration and records nothing, so this is
the baseline of scenario D and the settings of every server and writer that is
not drf-live (djangochannelsrestframework, plain Channels, raw websockets).
"""

from project.settings import *  # noqa: F403
from project.settings import INSTALLED_APPS

INSTALLED_APPS = ["bench.apps.Unregistered" if app == "notifications" else app for app in INSTALLED_APPS]
