"""Settings for the drf-live example project.

Everything has an embedded default (SQLite, the in-memory channel layer), and
the environment overrides it: DATABASE_URL (with DATABASE_POOL and
DATABASE_POOL_MAX_SIZE for PostgreSQL), REDIS_URL, SECRET_KEY, ALLOWED_HOSTS,
CSRF_TRUSTED_ORIGINS and DEBUG.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import dj_database_url
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from notifications.shards import channel_layer_hosts

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DEBUG", True)
SECRET_KEY = os.environ.get("SECRET_KEY", "drf-live-demo-only-not-secret")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "channels",
    "notifications",
    "api",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "project.urls"
ASGI_APPLICATION = "project.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        conn_max_age=0,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and os.environ.get("DATABASE_POOL", "1") != "0":
    # Every database_sync_to_async call of the consumer (authenticate, check
    # access, snapshot) closes its connection afterwards, as Django does at the
    # end of a request under ASGI; without a pool each one opens a new
    # PostgreSQL connection, which triples the cost of a subscribe (see
    # docs/deployment.md, "Database connections"). DATABASE_POOL=0 turns it off.
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 2,
        "max_size": int(os.environ.get("DATABASE_POOL_MAX_SIZE", "20")),
        "timeout": 10,
    }
elif DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the ASGI server read while a management command writes. Every
    # transaction takes the write lock when it begins (IMMEDIATE) and waits for
    # it up to `timeout` seconds: with deferred transactions, a transaction that
    # read before another process wrote (drf-live's relay deletes outbox rows)
    # fails at once with "database is locked" instead of waiting.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        init_command="PRAGMA journal_mode=WAL;", transaction_mode="IMMEDIATE", timeout=20
    )
    # A file, so that test threads (database_sync_to_async) share it; one per
    # test process, so that concurrent runs do not share it.
    DATABASES["default"]["TEST"] = {"NAME": os.path.join(tempfile.gettempdir(), f"drf-live-test-{os.getpid()}.sqlite3")}

# One Redis URL, or several separated by commas (each a shard, in the same order in
# every process), each `redis://`, `rediss://` or a Sentinel service:
# `sentinel://host:26379,host:26379/master_name/db`. drf-live's store follows the
# layer's hosts (docs/deployment.md, "Sharding" and "Sentinel").
REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # Per-host options: redis-py's defaults (a 5 s socket timeout and
                # 100 pooled connections) make the layer fail with read timeouts
                # and MaxConnectionsError once ~100 consumers share a process.
                "hosts": channel_layer_hosts(
                    REDIS_URL,
                    socket_timeout=None,
                    socket_connect_timeout=5,
                    max_connections=1000,
                    health_check_interval=30,
                    # After a Redis restart, pooled connections are dead: retry
                    # a command once on a fresh one rather than fail it.
                    retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 1),
                ),
                "capacity": 1000,
                "expiry": 60,
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

AUTH_USER_MODEL = "api.User"
AUTH_PASSWORD_VALIDATORS: list[dict[str, str]] = []
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# The demo page (api/templates/api/demo.html) loads redux as an ES module from node_modules, which
# `npm ci` fills (`make run` does); nothing third-party is committed. Without it the page says so.
STATICFILES_DIRS = [("vendor/redux", path) for path in [BASE_DIR / "node_modules" / "redux" / "dist"] if path.is_dir()]

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # Lists paginate as a typical DRF API does (the contract's section 6): ?page=N,
    # {"count", "next", "previous", "results"}; sockets get the same pages.
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
}

HASHID_FIELD_SALT = os.environ.get("HASHID_FIELD_SALT", "drf-live-demo-salt")
HASHID_FIELD_ENABLE_HASHID_OBJECT = False


# drf-live's settings (notifications/conf.py lists them with their defaults);
# the DRF_LIVE environment variable may hold a JSON object of overrides.
DRF_LIVE = json.loads(os.environ.get("DRF_LIVE", "{}"))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"notifications": {"handlers": ["console"], "level": os.environ.get("DRF_LIVE_LOG_LEVEL", "INFO")}},
}
