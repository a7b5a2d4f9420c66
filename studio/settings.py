"""ProRL Studio settings: one file, read from the environment through small typed helpers.

Embedded defaults (SQLite under var/, a private Redis started by `studio.up`) need no variable at
all; production sets DATABASE_URL, REDIS_URL, SECRET_KEY, DEBUG=false and ALLOWED_HOSTS.

Production over HTTPS (each off by default, so the embedded http://127.0.0.1 keeps working; with all
of them set, `manage.py check --deploy` is clean):
    SECURE_HSTS_SECONDS=31536000       Strict-Transport-Security max-age (0: no header)
    SECURE_HSTS_INCLUDE_SUBDOMAINS=true, SECURE_HSTS_PRELOAD=true
    SECURE_SSL_REDIRECT=true           http:// requests are redirected to https://
    SESSION_COOKIE_SECURE=true, CSRF_COOKIE_SECURE=true   cookies only over HTTPS
    SECURE_PROXY_SSL_HEADER=X-Forwarded-Proto   behind a TLS proxy that sets this header to "https"
    PRORL_PROXY_COUNT=1                how many reverse proxies append to X-Forwarded-For (the login
                                       throttle then counts the client's address, not the proxy's)
Login throttling (django-axes): PRORL_LOGIN_FAILURE_LIMIT failed logins (default 5) of one username
from one address lock that pair out for PRORL_LOGIN_COOLOFF_S seconds (default 900) after the last.
PostgreSQL: each process keeps a pool of up to DB_POOL_MAX (default 8) connections; DB_POOL=false
opens one per request instead (DB_CONN_MAX_AGE then applies).
"""

from __future__ import annotations

import os
import warnings
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from studio import vendor

BASE_DIR = Path(__file__).resolve().parent.parent


def envstr(name: str, default: str) -> str:
    return os.environ.get(name, default)


def envbool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {value!r}")


def envint(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {value!r}") from None


def envfloat(name: str, default: float) -> float:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, not {value!r}") from None


VAR_DIR = Path(envstr("PRORL_VAR_DIR", str(BASE_DIR / "var")))
DEBUG = envbool("DEBUG", True)
SECRET_KEY = envstr("SECRET_KEY", "embedded-default-not-secret" if DEBUG else "")
if not SECRET_KEY:
    raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off")
ALLOWED_HOSTS = envstr("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver").split(",")
CSRF_TRUSTED_ORIGINS = [o for o in envstr("CSRF_TRUSTED_ORIGINS", "").split(",") if o]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "axes",
    "csp",
    "studio",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "studio.middleware.ContentSecurityPolicyMiddleware",
    # 503 + Retry-After while the database is away, raised in a view or in any middleware below
    "studio.middleware.DatabaseUnavailableMiddleware",
    "django.middleware.gzip.GZipMiddleware",
    # static files (when SERVE_STATIC): below GZip, so that what WhiteNoise serves is compressed
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "studio.middleware.NotFoundMiddleware",
    "axes.middleware.AxesMiddleware",  # last: turns a locked-out login into the lockout page
]

ROOT_URLCONF = "studio.urls"
ASGI_APPLICATION = "studio.asgi.application"
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
            ],
        },
    },
]

# Database: SQLite file by default (WAL, so the worker writes while the web server reads);
# DATABASE_URL=postgres://... for teams.
DATABASE_URL = envstr("DATABASE_URL", f"sqlite:///{VAR_DIR / 'studio.sqlite3'}")
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=envint("DB_CONN_MAX_AGE", 0))}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and envbool("DB_POOL", True):
    # A pool of open connections per process (psycopg_pool), instead of a new connection, and a new
    # PostgreSQL backend process, for every request: Django's way under ASGI, where persistent
    # connections (CONN_MAX_AGE) do not apply. max_size covers a worker's threads (the sink's flusher).
    DATABASES["default"]["OPTIONS"] = {"pool": {"min_size": 1, "max_size": envint("DB_POOL_MAX", 8), "timeout": 30}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Redis: Celery broker and the Channels layer.
REDIS_URL = envstr("REDIS_URL", "redis://127.0.0.1:6379/0")
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            # A dict host with explicit timeouts: the blocking receive must never time out.
            "hosts": [{"address": REDIS_URL, "socket_timeout": None, "socket_connect_timeout": 10}],
            "prefix": envstr("CHANNEL_LAYER_PREFIX", "asgi"),
            "capacity": 1000,
            "expiry": 60,
        },
    },
}

CELERY_BROKER_URL = REDIS_URL
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Training on `gpu` workers; evaluation jobs (comparisons) on `eval` workers.
CELERY_TASK_ROUTES = {"worker.tasks.train_run": {"queue": "gpu"}, "worker.eval_tasks.run_comparison": {"queue": "eval"}}
CELERY_TASK_IGNORE_RESULT = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# An unacknowledged message (its worker died) goes back to the queue after this many seconds.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": envint("CELERY_VISIBILITY_TIMEOUT", 3600),
    "unacked_restore_interval": envint("CELERY_RESTORE_INTERVAL", 10),
    "unacked_mutex_expire": envint("CELERY_RESTORE_INTERVAL", 10),
}

# Runs: each run trains in RUNS_DIR/<id> (checkpoints, engine files).
RUNS_DIR = Path(envstr("PRORL_RUNS_DIR", str(VAR_DIR / "runs")))
# A worker holding a run renews its lease every WORKER_LEASE_S / 4 seconds; a run whose lease is
# older than WORKER_LEASE_S has lost its worker and may be taken up by another.
# How many HTTP requests one ASGI process lets into Django at once (studio.asgi.TakingTurns); the
# others wait their turn in the event loop (measured with bench/viewers.py: 4 serves 50 clients best).
HTTP_CONCURRENCY = envint("PRORL_HTTP_CONCURRENCY", 4)
WORKER_LEASE_S = envfloat("PRORL_WORKER_LEASE_S", 60.0)
WORKER_TORCH_THREADS = envint("PRORL_TORCH_THREADS", 1)
# Watchdogs (studio/watchdogs.py): links in their notifications start with PRORL_STUDIO_URL (none
# when empty); webhooks to loopback and private addresses are refused unless
# PRORL_WEBHOOK_ALLOW_PRIVATE=true (workers sit inside the cluster, beside its own services).
STUDIO_URL = envstr("PRORL_STUDIO_URL", "")
WATCHDOG_PRIVATE_WEBHOOKS = envbool("PRORL_WEBHOOK_ALLOW_PRIVATE", False)
CHART_POINTS = envint("PRORL_CHART_POINTS", 2000)

# Paths a run may use (studio/paths.py, prorl_engine/paths.py): a model registered for you or your
# team, a checkpoint of a run you may fork, or a path under the roots below. Lists are separated by
# ":" and absolute. No root may hold the runs or uploads folder (everyone could read every run).
#   PRORL_MODEL_ROOTS     model folders every user may train from (default: the committed demo model)
#   PRORL_DATA_ROOTS      data files every user may train on (default: the engine's example files)
#   PRORL_REGISTRY_ROOTS  where staff may register models and data sets for a person or a team
#                         (default: the model and data roots)
#   PRORL_CHECK_PATHS_ON_WEB=false  the web host does not look for permitted paths on its own disk
#                         (models and data that exist only on the GPU workers); the worker still does
#   PRORL_UPLOAD_MAX_MB   largest data file a user may upload (default 64)
# tiny:NAME / base:NAME build only under MODEL_BUILD_DIR (the project's var folder).


def envpaths(name: str, default: list[Path]) -> list[Path]:
    """A ":"-separated list of absolute folders, normalised."""
    raw = envstr(name, "")
    paths = [Path(part) for part in raw.split(os.pathsep) if part] if raw else default
    relative = [str(path) for path in paths if not path.is_absolute()]
    if relative:
        raise ImproperlyConfigured(f"{name} must list absolute folders, not {', '.join(relative)}")
    return [Path(os.path.normpath(path)) for path in paths]


MODEL_BUILD_DIR = VAR_DIR / "models"
UPLOADS_DIR = VAR_DIR / "uploads"  # data files users upload, one folder per upload
MODEL_ROOTS = envpaths("PRORL_MODEL_ROOTS", [BASE_DIR / "prorl_engine" / "configs" / "demo-base"])
DATA_ROOTS = envpaths("PRORL_DATA_ROOTS", [BASE_DIR / "prorl_engine" / "data" / "examples"])
REGISTRY_ROOTS = envpaths("PRORL_REGISTRY_ROOTS", MODEL_ROOTS + DATA_ROOTS)
CHECK_PATHS_ON_WEB = envbool("PRORL_CHECK_PATHS_ON_WEB", True)
UPLOAD_MAX_BYTES = envint("PRORL_UPLOAD_MAX_MB", 64) * 2**20
for _name, _roots in (("PRORL_MODEL_ROOTS", MODEL_ROOTS), ("PRORL_DATA_ROOTS", DATA_ROOTS)):
    for _root in _roots:
        for _private in (RUNS_DIR, UPLOADS_DIR):
            if Path(os.path.normpath(_private.absolute())).is_relative_to(_root):
                raise ImproperlyConfigured(
                    f"{_name}: {_root} holds {_private}: every user could read every "
                    "run's checkpoints or every upload; list narrower folders"
                )

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
# Login throttling (django-axes): the backend refuses a locked-out username + address pair before
# the password is checked. API tokens and websockets never call authenticate(), so they are unaffected.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = envint("PRORL_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(seconds=envint("PRORL_LOGIN_COOLOFF_S", 900))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]  # one person's typos lock out no one else
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "studio.accounts.locked_out"
AXES_CLIENT_IP_CALLABLE = "studio.accounts.client_ip"
PROXY_COUNT = envint("PRORL_PROXY_COUNT", 0)

# HTTPS in production (see the module docstring); the embedded defaults serve plain http://127.0.0.1.
SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = envbool("SECURE_HSTS_PRELOAD", False)
SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", False)
SESSION_ENGINE = "studio.sessions"  # database sessions; one the database could not save is a 503, not a 400
SESSION_COOKIE_SECURE = envbool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = envbool("CSRF_COOKIE_SECURE", False)
# The header a TLS proxy sets to "https" (X-Forwarded-Proto): Django then trusts it for is_secure().
_PROXY_SSL_HEADER = envstr("SECURE_PROXY_SSL_HEADER", "").strip().upper().replace("-", "_")
SECURE_PROXY_SSL_HEADER = (f"HTTP_{_PROXY_SSL_HEADER}", "https") if _PROXY_SSL_HEADER else None

# Content-Security-Policy (django-csp): scripts only from our static files (no inline script, no
# eval: the charts are SVG traces, plotly's WebGL ones compile code with Function()), data only from
# this origin and its websockets (studio.middleware adds ws(s)://<host>). Styles: our files, and the
# two <style> elements plotly.min.js adds by itself, allowed by the SHA-256 of their text: an empty
# one it fills through the CSSOM (hover labels, modebar), and maplibre's stylesheet. A new plotly.js
# build may change the second: tests/browser/test_csp.py then fails and the browser names the hash.
PLOTLY_STYLE_HASHES = [
    "'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='",
    "'sha256-ji27qzEtxXZW+7dun6UwjHXJ18e6WAin1VvNtkzIE/o='",
]
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", *PLOTLY_STYLE_HASHES],
        # blob: the PNG of a chart (plotly's toImage draws the chart's SVG, as a blob URL, onto a canvas)
        "img-src": ["'self'", "data:", "blob:"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "run-list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

# Request bodies, sized for the run form: about 60 short fields and a data mix of at most 128k
# characters of YAML (prorl_engine.config.MAX_CONFIG_CHARS), which URL-encoding grows to about 3
# bytes per punctuation character. Larger bodies and more fields are answered 400 by Django itself.
# An uploaded file larger than FILE_UPLOAD_MAX_MEMORY_SIZE is streamed to a temporary file, not
# held in memory (the forms refuse files over their own limits).
DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024
DATA_UPLOAD_MAX_NUMBER_FIELDS = 200
FILE_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024

STATIC_URL = "static/"
# The checkout's own scripts and styles, and the front-end libraries `make setup` fetches into var/vendor/
# (studio/vendor.py: pinned by hash, not kept in the tree), both under /static/studio/.
STATICFILES_DIRS = [BASE_DIR / "static", (vendor.STATIC_PREFIX, vendor.VENDOR_DIR)]
STATIC_ROOT = VAR_DIR / "static"
# WhiteNoise serves static/ through the ASGI server (the embedded default; SERVE_STATIC=false when
# a proxy in front serves STATIC_ROOT instead). Straight from the checkout's static/ folder (no
# collectstatic step), gzip-compressed by GZipMiddleware on the way out (plotly.min.js: 4.7 MB ->
# about 1.4 MB), or as the .gz/.br files `collectstatic` writes with the compressing storage below.
# Browsers keep each file PRORL_STATIC_MAX_AGE seconds, then revalidate it by its ETag (a 304); a
# new release's scripts reach an open browser within that time.
SERVE_STATIC = envbool("SERVE_STATIC", True)
if not SERVE_STATIC:
    MIDDLEWARE.remove("whitenoise.middleware.WhiteNoiseMiddleware")
WHITENOISE_USE_FINDERS = True
# STATIC_ROOT exists once `collectstatic` ran; until then WhiteNoise serves static/ alone, as it should.
warnings.filterwarnings("ignore", message="No directory at: ", category=UserWarning)
WHITENOISE_MAX_AGE = envint("PRORL_STATIC_MAX_AGE", 3600)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": envstr("LOG_LEVEL", "INFO")},
    "loggers": {"daphne": {"level": "WARNING"}, "django.channels.server": {"level": "WARNING"}},
}
