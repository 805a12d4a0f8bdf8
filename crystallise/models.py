"""Kernel models: operator-managed API keys."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from decimal import Decimal

from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import DecimalField, OuterRef, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

KEY_PREFIX = "cry_"


def hash_secret(secret: str) -> str:
    # Keys are 256-bit random strings, so a fast hash is enough: there is no
    # dictionary to brute-force, and lookups stay one indexed query.
    return hashlib.sha256(secret.encode()).hexdigest()


class ApiKeyQuerySet(models.QuerySet):
    def active(self) -> ApiKeyQuerySet:
        return self.filter(is_active=True)

    def create_key(self, *, name: str, monthly_budget_usd=None) -> tuple[ApiKey, str]:
        """Create a key; the secret is returned once and only its hash is stored."""
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        key = self.create(
            name=name,
            prefix=secret[:12],
            key_hash=hash_secret(secret),
            monthly_budget_usd=monthly_budget_usd,
        )
        return key, secret

    def key_or_any_active(self, digest: str) -> ApiKeyQuerySet:
        """The key with this digest if it exists (active or not), else any active key, first.

        `crystallise.auth` runs it prepared (compiled once per process)."""
        return (
            self.filter(models.Q(key_hash=digest) | models.Q(is_active=True))
            .annotate(match=models.Case(models.When(key_hash=digest, then=1), default=0, output_field=models.IntegerField()))
            .order_by("-match")
        )

    def with_spend(self) -> ApiKeyQuerySet:
        """Annotate `spend_usd` (all jobs to date) and `month_spend_usd` (this calendar month, UTC).

        Correlated subqueries over the job tables: one query for any number of keys.
        """
        from crystallise.jobs.models import BaseJob

        month_start = timezone.now().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        money = DecimalField(max_digits=16, decimal_places=8)

        def spend(job_model, **filters):
            total = (job_model.objects.filter(api_key=OuterRef("pk"), **filters).order_by().values("api_key")
                     .annotate(total=Sum("cost_usd")).values("total"))
            return Coalesce(Subquery(total, output_field=money), Value(Decimal("0")), output_field=money)

        job_models = BaseJob.__subclasses__()
        all_time = month = None
        for job_model in job_models:
            all_time = spend(job_model) if all_time is None else all_time + spend(job_model)
            month = (spend(job_model, created_at__gte=month_start) if month is None
                     else month + spend(job_model, created_at__gte=month_start))
        return self.annotate(spend_usd=all_time, month_spend_usd=month)


class ApiKey(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100, unique=True)
    prefix = models.CharField(max_length=16, editable=False, help_text="First characters of the key, for recognising it.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    is_active = models.BooleanField(default=True)
    monthly_budget_usd = models.DecimalField(
        max_digits=12, decimal_places=2, null=True, blank=True, validators=[MinValueValidator(0)],
        help_text="Optional spend cap per calendar month (UTC); jobs whose estimate exceeds what is left are refused.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    request_count = models.PositiveBigIntegerField(default=0)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def label(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    def revoke(self) -> None:
        self.is_active = False
        self.revoked_at = timezone.now()
        self.save(update_fields=["is_active", "revoked_at"])

    def reactivate(self) -> None:
        self.is_active = True
        self.revoked_at = None
        self.save(update_fields=["is_active", "revoked_at"])


from crystallise.jobs.models import JobSecret  # noqa: E402,F401  (registers the model in this app)
from crystallise.metrics.store import MetricCounter  # noqa: E402,F401  (the shared metric counters, ditto)
from crystallise.ratelimit.models import RateLimitKey, RateLimitLease  # noqa: E402,F401  (the shared rate limiter, ditto)
