"""Minimal Django project running a real django-helpdesk 2.6 for bpsm-connector's tests.

Everything that differs between test sessions comes from the environment:

DJHELPDESK_DB_PATH     SQLite file (required; each test session uses a fresh temp file)
DJHELPDESK_MEDIA_ROOT  attachments directory (default: "media" beside the database)
DJHELPDESK_SECRET_KEY  (default: a fixed test-only key)
DJHELPDESK_DEBUG       "1" turns DEBUG on (default off)
DJHELPDESK_FAST_PASSWORD_HASHER  "1" hashes passwords with MD5 (tests only, see below)
BPSM_HELPDESK_CONTRIB_DIR  home of the bpsm_helpdesk app (default: <repo>/contrib/django_helpdesk)

django-helpdesk itself reads its webhook targets from the environment of this process:
HELPDESK_NEW_TICKET_WEBHOOK_URLS and HELPDESK_FOLLOWUP_WEBHOOK_URLS (helpdesk/settings.py).
"""

import os
import sys
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent  # tests/realhosts/django_helpdesk
REPO_ROOT = BASE_DIR.parents[2]

# The optional app bpsm-connector ships for helpdesk admins (bpsm_queues command).
CONTRIB_DIR = Path(
    os.environ.get("BPSM_HELPDESK_CONTRIB_DIR", REPO_ROOT / "contrib" / "django_helpdesk")
)
if str(CONTRIB_DIR) not in sys.path:
    sys.path.insert(0, str(CONTRIB_DIR))

_db_path = os.environ.get("DJHELPDESK_DB_PATH")
if not _db_path:
    raise ImproperlyConfigured(
        "Set DJHELPDESK_DB_PATH to the SQLite file this helpdesk should use "
        "(tests/realhosts/django_helpdesk_server.py does this with a temp file)."
    )
DB_PATH = Path(_db_path)

SECRET_KEY = os.environ.get(
    "DJHELPDESK_SECRET_KEY", "insecure-test-only-key-for-bpsm-connector-realhost-tests"
)
DEBUG = os.environ.get("DJHELPDESK_DEBUG") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

INSTALLED_APPS = [
    "django.contrib.admin",  # helpdesk admin/maintenance
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.sites",  # helpdesk builds absolute links for e-mails from it
    "django.contrib.humanize",  # helpdesk templates: elapsed time formatting
    "rest_framework",  # helpdesk's REST API (/api/)
    "helpdesk",
    "bpsm_helpdesk",  # contrib/django_helpdesk: the bpsm_queues command
]
# Older install docs also list "bootstrap4form": django-helpdesk 2.6 ships its own
# bootstrap5_form template tags instead, so it is not needed (and not installed).

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
WSGI_APPLICATION = "project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.debug",
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": DB_PATH,
        "OPTIONS": {
            # The server is threaded (a webhook receiver may call the API back while
            # the request that fired the webhook is still running): wait for locks
            # instead of failing with "database is locked", and let readers run
            # beside a writer.
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL;",
        },
    }
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
MEDIA_ROOT = Path(os.environ.get("DJHELPDESK_MEDIA_ROOT", DB_PATH.parent / "media"))
MEDIA_URL = "media/"

SITE_ID = 1
LOGIN_URL = "/login/"

# Every basic-auth API request checks the password: with Django's default PBKDF2
# hasher that is ~0.3 s of CPU per request on a small machine. The harness turns
# this on by default to keep end-to-end tests fast; never in production.
if os.environ.get("DJHELPDESK_FAST_PASSWORD_HASHER") == "1":
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Tests never send mail: keep it in memory.
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
DEFAULT_FROM_EMAIL = "helpdesk@example.com"

REST_FRAMEWORK = {
    # DRF's defaults, spelled out: the connector uses basic auth.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.BasicAuthentication",
    ],
}

# --- django-helpdesk -------------------------------------------------------
# Teams mode (on by default) needs pinax-teams and its dependencies; a single
# helpdesk for tests does not. Turning it off is the documented way (docs/teams.rst).
HELPDESK_TEAMS_MODE_ENABLED = False
# Keep the knowledge base on: with it off, helpdesk/urls.py does not import the
# kb views its URL patterns still name (helpdesk/urls.py:36).
HELPDESK_KB_ENABLED = True
# The REST API is on by default; say so.
HELPDESK_API_ENABLED = True

# With DEBUG off Django logs nothing to the console by default: send errors (the
# traceback of a 500, a webhook timeout) to stderr, which the harness captures.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {
        "stderr": {"class": "logging.StreamHandler", "formatter": "plain"},
    },
    "loggers": {
        "django.request": {"handlers": ["stderr"], "level": "ERROR", "propagate": False},
        "helpdesk": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
    },
}
