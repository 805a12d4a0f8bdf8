"""System checks: dev mode is flagged by `manage.py check --deploy`."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Tags, Warning, register


@register(Tags.security, deploy=True)
def dev_mode_check(app_configs, **kwargs):
    from django.db import DatabaseError

    from crystallise.auth import dev_mode_active

    try:
        active = dev_mode_active()
    except DatabaseError:
        # Before migrations there are no admin keys either.
        active = not settings.CRYSTALLISE_API_KEYS
    if active:
        return [
            Warning(
                "Dev mode: CRYSTALLISE_API_KEYS is empty and no active admin API key exists, "
                "so any non-empty X-API-Key is accepted.",
                hint="Set CRYSTALLISE_API_KEYS or run `python manage.py create_api_key NAME`.",
                id="crystallise.W001",
            )
        ]
    return []
