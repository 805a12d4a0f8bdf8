import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crystallise_site.settings.base")

application = get_wsgi_application()

from crystallise.auth import warn_if_dev_mode  # noqa: E402

warn_if_dev_mode()
