"""Settings for the Agent Task Console, read from the environment.

The embedded default (nothing set) is SQLite in ./var, an in-memory channel layer and the
in-process worker. Secrets that must survive restarts but were not given (SECRET_KEY, the field
encryption key) are generated once into ./var with mode 0600.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

import environ
from django.utils.csp import CSP

BASE_DIR = Path(__file__).resolve().parent.parent
# Typed reads of the environment (django-environ); the helpers below keep "set but empty" meaning
# "use the default" and name the variable in the error when a value does not parse.
env = environ.Env()
VAR_DIR = Path(env.str("VAR_DIR", default=str(BASE_DIR / "var")))


def _env_set(name: str) -> bool:
    return bool(os.environ.get(name, "").strip())


def _env_bool(name: str, default: bool = False) -> bool:
    return env.bool(name) if _env_set(name) else default


def _env_int(name: str, default: int) -> int:
    if not _env_set(name):
        return default
    try:
        return env.int(name)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {os.environ[name]!r}") from exc


def _env_float(name: str, default: float) -> float:
    if not _env_set(name):
        return default
    try:
        return env.float(name)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {os.environ[name]!r}") from exc


def _env_list(name: str, default: str = "") -> list[str]:
    """A comma-separated variable as a list, blanks dropped."""
    return [v.strip() for v in env.list(name, default=default.split(",") if default else []) if v.strip()]


class MissingSecret(Exception):
    """A secret the server needs was not configured (raised at start, before anything is served)."""


# Set when this process created a secret file, so the start-up key check can tell a fresh key from
# a key that was there before (a fresh key beside encrypted data means the old key went missing).
GENERATED_SECRET_FILES: list[Path] = []


def _persistent_secret(filename: str, make, *, env_name: str, embedded: bool) -> str:
    """Read a generated secret from VAR_DIR, creating it (mode 0600) on first use.

    Only the embedded SQLite default generates secrets: several machines sharing a PostgreSQL
    database must share the same keys, so there they must be set in the environment.
    """
    path = VAR_DIR / filename
    if path.exists():
        return path.read_text().strip()
    if not embedded:
        raise MissingSecret(
            f"{env_name} is not set. With a database other than the embedded SQLite default, every "
            "server and worker must share the same keys: set SECRET_KEY and FIELD_ENCRYPTION_KEYS in "
            "the environment (see the README, 'Keys and secrets')."
        )
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    value = make()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    GENERATED_SECRET_FILES.append(path)
    return value


def _database_from_url(url: str) -> dict:
    """Turn DATABASE_URL (sqlite:///path or postgres://...) into a Django DATABASES entry."""
    scheme = url.split(":", 1)[0]
    if scheme == "sqlite":
        # sqlite:///relative/path (relative to the project) or sqlite:////absolute/path
        name = env.db_url_config(url)["NAME"]
        if not name or name == ":memory:":
            raise ValueError("DATABASE_URL for sqlite needs a path, e.g. sqlite:///var/db.sqlite3")
        path = Path(name)
        return _sqlite(path if path.is_absolute() else BASE_DIR / path)
    if scheme in {"postgres", "postgresql", "pgsql"}:
        config = env.db_url_config(url)
        config.setdefault("NAME", "postgres")
        config["NAME"] = config["NAME"] or "postgres"
        config["PORT"] = str(config.get("PORT") or "")
        config.setdefault("OPTIONS", {})
        # Kept between requests on the web process's request threads (health-checked before reuse):
        # a new connection per request forked a server process each time, which made the scaled-out
        # deployment spend ~30 % more CPU per agent run across the machine and complete ~25 % fewer
        # runs (docs/benchmarks.md). Each of WEB_DB_CONNECTIONS threads (per process) may so hold one
        # while idle, within the budget docs/deploy.md gives against max_connections; 0 closes it.
        config["CONN_MAX_AGE"] = _env_int("DB_CONN_MAX_AGE", 600)
        config["CONN_HEALTH_CHECKS"] = True
        config["TEST"] = {"NAME": env.str("TEST_DATABASE_NAME", default="") or None}
        return config
    raise ValueError(f"DATABASE_URL scheme {scheme!r} is not supported (use sqlite:/// or postgres://)")


def _sqlite(path: Path) -> dict:
    path.parent.mkdir(parents=True, exist_ok=True)
    return {
        "ENGINE": "console.sqlite",  # Django's, its writers admitted in turn (console/sqlite/base.py)
        "NAME": str(path),
        # One writer at a time: IMMEDIATE makes writers wait for the lock instead of failing.
        "OPTIONS": {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
        # Tests on a file too, as in production: an in-memory shared-cache database locks whole tables,
        # so a read on another thread (the followers' pool) fails at once beside a write.
        "TEST": {"NAME": str(Path(tempfile.gettempdir()) / f"atc-test-{os.getpid()}.sqlite3")},
        # A request thread keeps its connection for the next request (console.handler): opening one
        # costs ~2 ms of CPU, more than a cheap request's own work. Broken ones are replaced.
        "CONN_MAX_AGE": _env_int("DB_CONN_MAX_AGE", 3600),
        "CONN_HEALTH_CHECKS": True,
    }


DEBUG = _env_bool("DEBUG")
_DATABASE_URL = env.str("DATABASE_URL", default="").strip()
# Secrets are generated into var/ only for the embedded SQLite default (one machine).
EMBEDDED_DATABASE = not _DATABASE_URL or _DATABASE_URL.startswith("sqlite:")
# Secrets are read raw: django-environ would treat a value starting with "$" as a reference.
SECRET_KEY = os.environ.get("SECRET_KEY") or _persistent_secret(
    "secret_key", lambda: secrets.token_urlsafe(50), env_name="SECRET_KEY", embedded=EMBEDDED_DATABASE
)
ALLOWED_HOSTS = _env_list("ALLOWED_HOSTS", "127.0.0.1,localhost")
CSRF_TRUSTED_ORIGINS = _env_list("CSRF_TRUSTED_ORIGINS")

# Comma-separated Fernet keys; the first encrypts, all decrypt (rotation). Never derived from SECRET_KEY.
FIELD_ENCRYPTION_KEY_FILE = VAR_DIR / "field_encryption_key"
FIELD_ENCRYPTION_KEYS_FROM_ENV = _env_set("FIELD_ENCRYPTION_KEYS")
FIELD_ENCRYPTION_KEYS = [
    k.strip()
    for k in (
        os.environ.get("FIELD_ENCRYPTION_KEYS", "")
        if FIELD_ENCRYPTION_KEYS_FROM_ENV
        else _persistent_secret(
            FIELD_ENCRYPTION_KEY_FILE.name,
            lambda: __import__("cryptography.fernet").fernet.Fernet.generate_key().decode(),
            env_name="FIELD_ENCRYPTION_KEYS",
            embedded=EMBEDDED_DATABASE,
        )
    ).split(",")
    if k.strip()
]

# HTTPS behind a proxy: `HTTPS=on` turns on the redirect, secure cookies and HSTS together.
HTTPS = _env_bool("HTTPS")
SECURE_SSL_REDIRECT = _env_bool("SECURE_SSL_REDIRECT", HTTPS)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = HTTPS
SECURE_HSTS_SECONDS = _env_int("SECURE_HSTS_SECONDS", 31_536_000 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = _env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", HTTPS)
SECURE_HSTS_PRELOAD = _env_bool("SECURE_HSTS_PRELOAD", False)
# The header a trusted proxy sets to say the client used HTTPS (e.g. X-Forwarded-Proto); unset
# means no proxy is trusted, since any client could send it.
_PROXY_HEADER = env.str("SECURE_PROXY_SSL_HEADER", default="").strip()
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_" + _PROXY_HEADER.upper().replace("-", "_"), "https") if _PROXY_HEADER else None
)
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "console",
    "tasks_app",  # before channels: its runworker command is ours
    "channels",
]

MIDDLEWARE = [
    "console.middleware.ApiPathMiddleware",
    "console.audit.AuditAddressMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "django.middleware.common.CommonMiddleware",
    # The console's session, CSRF, sign-in and messages; skipped on the API, which authenticates by
    # x-api-key only (console.middleware.ConsoleOnlyMiddleware runs CONSOLE_MIDDLEWARE, in order).
    "console.middleware.ConsoleOnlyMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
CONSOLE_MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

# These checks look for the console's middleware in MIDDLEWARE itself; it runs, for every non-API path,
# from CONSOLE_MIDDLEWARE. console.E001 (console/middleware.py) checks CSRF is there instead of
# security.W003; tests/test_request_path.py posts to every console form without a token.
SILENCED_SYSTEM_CHECKS = ["admin.E408", "admin.E409", "admin.E410", "security.W003"]
ROOT_URLCONF = "console.urls"
APPEND_SLASH = False  # the xpander SDK treats any redirect as an error

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "django.template.context_processors.csp",
                "console.web.context.console",
            ],
        },
    },
]

ASGI_APPLICATION = "console.asgi.application"
WSGI_APPLICATION = None

DATABASES = {
    "default": _database_from_url(_DATABASE_URL) if _DATABASE_URL else _sqlite(VAR_DIR / "db.sqlite3")
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="").strip()
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "capacity": 1000, "expiry": 60},
        }
    }
else:
    # channels' in-memory layer with its expiry sweep amortized (console/channel_layer.py says why)
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "console.channel_layer.SweepingInMemoryChannelLayer",
            "CONFIG": {"capacity": 1000},
        }
    }

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(VAR_DIR / "media")))
# Uploaded files: every web server and worker must see the same ones (a shared MEDIA_ROOT, or an
# object store through a storage backend such as django-storages' S3Storage; docs/deploy.md).
STORAGES = {
    "default": {
        "BACKEND": env.str("FILE_STORAGE_BACKEND", default="django.core.files.storage.FileSystemStorage"),
        "OPTIONS": env.json("FILE_STORAGE_OPTIONS", default={}),
    },
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# The web console (console/web): sign-in at /, sessions, Content-Security-Policy.
LOGIN_URL = "/"
SESSION_COOKIE_AGE = _env_int("SESSION_COOKIE_AGE", 7 * 24 * 3600)
SESSION_COOKIE_SAMESITE = CSRF_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_HTTPONLY = True  # forms carry the token; no script needs to read the cookie
CONSOLE_SIGNIN_ATTEMPTS = _env_int("CONSOLE_SIGNIN_ATTEMPTS", 10)  # failed sign-ins per email per 15 min
CONSOLE_SIGNIN_ADDRESS_ATTEMPTS = _env_int("CONSOLE_SIGNIN_ADDRESS_ATTEMPTS", 50)  # ... per client address
CONSOLE_PAGE_SIZE = _env_int("CONSOLE_PAGE_SIZE", 50)
# Django's /admin/: off; when on, superusers only (console.admin_site)
DJANGO_ADMIN = _env_bool("DJANGO_ADMIN")
CONSOLE_INVITE_HOURS = _env_int("CONSOLE_INVITE_HOURS", 72)  # an invitation link's life
TASK_MAX_RUN_SECONDS = _env_float("TASK_MAX_RUN_SECONDS", 0.0)  # a built-in run's longest; 0: none
MCP_TOOLS_CACHE_SECONDS = _env_float("MCP_TOOLS_CACHE_SECONDS", 60.0)  # MCP tool lists reused; 0: off
if MCP_TOOLS_CACHE_SECONDS < 0:
    raise ValueError("MCP_TOOLS_CACHE_SECONDS must not be negative (0 turns the cache off)")
# OpenAI-compatible streams read by tasks_app/runtime/lean_openai.py; off: the openai SDK's reader.
LLM_LEAN_STREAM = _env_bool("LLM_LEAN_STREAM", True)
if DATABASES["default"].get("CONN_MAX_AGE", 0) < 0:
    raise ValueError("DB_CONN_MAX_AGE must not be negative (0 closes the connection after each request)")
TASK_RETENTION_DAYS = _env_int("TASK_RETENTION_DAYS", 0)  # finished tasks kept N days; 0: forever
RETENTION_SWEEP_SECONDS = _env_float("RETENTION_SWEEP_SECONDS", 3600.0)  # how often the worker purges
CONSOLE_DASHBOARD_CACHE_SECONDS = _env_int("CONSOLE_DASHBOARD_CACHE_SECONDS", 30)  # dashboard figures reused
CONSOLE_WS_RECHECK_SECONDS = _env_float("CONSOLE_WS_RECHECK_SECONDS", 30.0)  # re-check a socket's member
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF, CSP.NONCE],
    "style-src": [CSP.SELF],
    "img-src": [CSP.SELF, "data:"],
    "connect-src": [CSP.SELF],
    "object-src": [CSP.NONE],
    "base-uri": [CSP.NONE],
    "form-action": [CSP.SELF],
    "frame-ancestors": [CSP.NONE],
}

# Task engine limits and behaviour.
TASK_PROMPT_MAX_CHARS = _env_int("TASK_PROMPT_MAX_CHARS", 200_000)
TASK_MAX_FILES = _env_int("TASK_MAX_FILES", 50)
TASK_UPLOAD_MAX_BYTES = _env_int("TASK_UPLOAD_MAX_BYTES", 25 * 1024 * 1024)
API_JSON_MAX_DEPTH = _env_int("API_JSON_MAX_DEPTH", 64)  # nesting levels of a request body
ACTIVITY_PAGE_MAX = _env_int("ACTIVITY_PAGE_MAX", 1000)  # largest ?limit= of the activity log route
METRICS_REPORTS_PER_TASK = _env_int("METRICS_REPORTS_PER_TASK", 50)  # older reports are dropped
METRICS_REPORT_MAX_BYTES = _env_int("METRICS_REPORT_MAX_BYTES", 64 * 1024)  # one report, as JSON
# inprocess | none (a separate runworker) | celery (Celery workers, tasks_app/celery_executor.py)
TASK_EXECUTION = env.str("TASK_EXECUTION", default="inprocess").strip() or "inprocess"
if TASK_EXECUTION not in {"inprocess", "none", "celery"}:
    raise ValueError(f"TASK_EXECUTION must be inprocess, none or celery, got {TASK_EXECUTION!r}")
WORKER_CONCURRENCY = _env_int("WORKER_CONCURRENCY", 1000)
WORKER_LEASE_SECONDS = _env_float("WORKER_LEASE_SECONDS", 30.0)
WORKER_HEARTBEAT_SECONDS = _env_float("WORKER_HEARTBEAT_SECONDS", 5.0)
WORKER_MAX_ATTEMPTS = _env_int("WORKER_MAX_ATTEMPTS", 3)
WORKER_POLL_SECONDS = _env_float("WORKER_POLL_SECONDS", 2.0)
# An @on_task worker acknowledges a delivery with its first `executing` PATCH; unacknowledged, it is taken back.
WORKER_ACK_SECONDS = _env_float("WORKER_ACK_SECONDS", 30.0)
SSE_KEEPALIVE_SECONDS = _env_float("SSE_KEEPALIVE_SECONDS", 15.0)
SSE_MAX_STREAMS_PER_KEY = _env_int("SSE_MAX_STREAMS_PER_KEY", 20)  # open event streams per API key
SSE_READ_THREADS = _env_int("SSE_READ_THREADS", 4)  # threads (so DB connections) every follower shares
# TASK_EXECUTION=celery: runs are delivered through this broker to `celery -A console worker`
# (docs/deploy.md). Acks come after the run; the database lease stays the truth.
CELERY_BROKER_URL = (
    env.str("CELERY_BROKER_URL", default="") or REDIS_URL or "amqp://guest:guest@127.0.0.1:5672//"
)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_TASK_ACKS_ON_FAILURE_OR_TIMEOUT = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_DEFAULT_QUEUE = env.str("CELERY_QUEUE", default="agent-runs")
CELERY_WORKER_PREFETCH_MULTIPLIER = 1  # a busy worker does not sit on runs another could start
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Longer than the longest run: an unacknowledged run is redelivered after it (Redis broker).
CELERY_RUN_TIMEOUT_SECONDS = _env_int("CELERY_RUN_TIMEOUT_SECONDS", 24 * 3600)
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_RUN_TIMEOUT_SECONDS + 3600}
# Requests of one web process that may hold a database connection at once (more wait their turn).
WEB_DB_CONNECTIONS = _env_int("WEB_DB_CONNECTIONS", 40)
# How long the event loop waits for a request's call on its thread (console/handler.py hand_over):
# with SQLite the calls are this process's own CPU work, and waiting spares a GIL handover per statement.
REQUEST_CALL_WAIT_MS = _env_float(
    "REQUEST_CALL_WAIT_MS", 15.0 if DATABASES["default"]["ENGINE"] == "console.sqlite" else 0.0
)
if not 0 <= REQUEST_CALL_WAIT_MS <= 50:
    raise ValueError("REQUEST_CALL_WAIT_MS must be between 0 and 50 (milliseconds; 0: the loop never waits)")
# How long an API key's caller (console.access.Actor) is reused without reading its row. Revoking a
# key, changing a role or deactivating a member forgets it at once in the process that did it;
# other processes (a second web server) notice within this many seconds. 0: read on every request.
API_KEY_CACHE_SECONDS = _env_float("API_KEY_CACHE_SECONDS", 5.0)
if not 0 <= API_KEY_CACHE_SECONDS <= 30:  # a key's last use is recorded on a cache miss (60 s resolution)
    raise ValueError("API_KEY_CACHE_SECONDS must be between 0 and 30")
if SSE_MAX_STREAMS_PER_KEY < 1 or SSE_READ_THREADS < 1:
    raise ValueError("SSE_MAX_STREAMS_PER_KEY and SSE_READ_THREADS must be at least 1")
STOP_WAIT_SECONDS = _env_float("STOP_WAIT_SECONDS", 5.0)
CHUNK_COALESCE_SECONDS = _env_float("CHUNK_COALESCE_SECONDS", 0.05)
# Internal hosts/CIDRs the server may connect to (files, model endpoints, MCP); FILE_FETCH_ALLOWLIST is an alias.
OUTBOUND_ALLOWLIST = _env_list("OUTBOUND_ALLOWLIST") + _env_list("FILE_FETCH_ALLOWLIST")
# A bad entry stops the start here, not the first task that connects somewhere.
__import__("console.egress").egress.Allowlist.parse(OUTBOUND_ALLOWLIST)
# How long the link to a file uploaded with a task works without the organization's API key.
TASK_UPLOAD_LINK_MAX_AGE = _env_int("TASK_UPLOAD_LINK_MAX_AGE", 7 * 24 * 3600)
# MCP sign-in (issue 15): the console's public address for OAuth redirects (default: the request's host).
PUBLIC_URL = os.environ.get("PUBLIC_URL", "").strip().rstrip("/")
SIGNIN_FLOW_SECONDS = _env_int("SIGNIN_FLOW_SECONDS", 600)  # how long a started sign-in may take
SIGNIN_WAIT_SECONDS = _env_int("SIGNIN_WAIT_SECONDS", 3600)  # how long a paused task waits for its user
OAUTH_REFRESH_MARGIN_SECONDS = _env_int("OAUTH_REFRESH_MARGIN_SECONDS", 60)  # refresh this long before expiry

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # Every line loses the query strings and credentials of the URLs in it (console/logformat.py).
    "formatters": {
        "plain": {
            "()": "console.logformat.RedactingFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
        }
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    # The HTTP clients log every request's full URL at INFO: a model or MCP URL may carry a key in its
    # query string, and a line per model call is a cost on every run. Their warnings still show.
    "loggers": {
        "django.channels.server": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
        "httpx2": {"level": "WARNING"},
        "httpcore2": {"level": "WARNING"},
        "mcp.client": {"level": "WARNING"},
        # Django's default config gives `django` handlers of its own (a second, unredacted console
        # line under DEBUG, mail to admins): its lines go through the one handler above instead.
        "django": {"handlers": [], "propagate": True},
    },
}
