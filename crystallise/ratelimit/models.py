"""The shared limiter's state: what each provider key allows, and who holds which share of it."""

from __future__ import annotations

from django.db import models
from django.db.models import ExpressionWrapper, Q
from django.db.models.functions import Now


class RateLimitKey(models.Model):
    """A provider key's limits as last advertised (per minute), kept between jobs so the next one starts paced.

    Identified by the key's fingerprint (`crystallise.keyvault.key_fingerprint`), never the key.
    """

    fingerprint = models.CharField(max_length=64, primary_key=True)
    limit_requests = models.FloatField(null=True, blank=True)
    limit_tokens = models.FloatField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        app_label = "crystallise"

    def __str__(self) -> str:
        return f"{self.fingerprint[:12]}: {self.limit_requests} RPM, {self.limit_tokens} TPM"


class LeaseQuerySet(models.QuerySet):
    """Live means not yet lapsed by the database's clock (so hosts' clocks do not matter)."""

    def with_live(self) -> LeaseQuerySet:
        return self.annotate(live=ExpressionWrapper(Q(expires_at__gt=Now()), output_field=models.BooleanField()))

    def live(self) -> LeaseQuerySet:
        return self.filter(expires_at__gt=Now())


class RateLimitLease(models.Model):
    """One job run's share of a key's limit, valid until `expires_at` (renewed while the run lasts).

    `share` is the fraction of the key's limits the holder may use; `demand`
    the fraction it showed it can use (null: more than it was given).
    """

    fingerprint = models.CharField(max_length=64)
    holder = models.CharField(max_length=64)
    where = models.CharField(max_length=255, blank=True)  # host:pid, for operators
    share = models.FloatField(default=0)
    demand = models.FloatField(null=True, blank=True)
    expires_at = models.DateTimeField()

    objects = LeaseQuerySet.as_manager()

    class Meta:
        app_label = "crystallise"
        constraints = [models.UniqueConstraint(fields=["fingerprint", "holder"], name="rate_limit_lease_holder")]

    def __str__(self) -> str:
        return f"{self.fingerprint[:12]} {self.holder[:8]}: {self.share:.3f}"
