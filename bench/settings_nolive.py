"""The example project without drf-live: ``notifications`` is not an installed app.

``LiveModel.save`` then finds no registration and publishes nothing, so this is
the baseline of scenario D and the settings of every server and writer that is
not drf-live (djangochannelsrestframework, plain Channels, raw websockets).
"""

from project.settings import *  # noqa: F403
from project.settings import INSTALLED_APPS

INSTALLED_APPS = [app for app in INSTALLED_APPS if app != "notifications"]
