import gc
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crystallise_site.settings.base")

application = get_wsgi_application()

from django.urls import get_resolver  # noqa: E402

from crystallise.auth import warn_if_dev_mode  # noqa: E402

warn_if_dev_mode()

# Import every view now (Django would on the first request), then move all
# start-up objects (~160,000) out of the garbage collector's reach: a full
# collection over them took ~100 ms, a pause that landed on whichever request
# triggered it. Objects created later are collected as usual.
_ = get_resolver().url_patterns
gc.freeze()
