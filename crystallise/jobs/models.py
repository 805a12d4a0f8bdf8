from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from crystallise.llm.backends import get_backend
from crystallise.tokens import Usage


class JobStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class JobMode(models.TextChoices):
    """How a job's items reach the provider: one call each (online), or through the Batch API (batch)."""

    ONLINE = "online"
    BATCH = "batch"


class ServiceTier(models.TextChoices):
    """The provider's processing tier of an online job's calls (flex: half price, may be unavailable)."""

    DEFAULT = "default"
    FLEX = "flex"


ACTIVE_STATUSES = (JobStatus.PENDING, JobStatus.RUNNING)
TERMINAL_STATUSES = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


class JobQuerySet(models.QuerySet):
    def active(self):
        return self.filter(status__in=ACTIVE_STATUSES)

    def active_for(self, *, owner: str, project_id: str):
        return self.active().filter(owner=owner, project_id=project_id)

    def owned_by(self, owner: str):
        return self.filter(owner=owner)

    def stale(self):
        """Running jobs whose worker stopped heart-beating."""
        cutoff = timezone.now() - timedelta(seconds=settings.CRYSTALLISE_JOB_STALE_SECONDS)
        return self.filter(status=JobStatus.RUNNING, heartbeat_at__lt=cutoff)


class BaseJob(models.Model):
    # Columns that answering a poll never needs (see crystallise.api.get_owned_job).
    POLL_DEFERRED: tuple[str, ...] = ()

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.PENDING, db_index=True)
    model = models.CharField(max_length=64)
    project_id = models.CharField(max_length=200, null=True, blank=True, db_index=True)
    llm_backend = models.CharField(max_length=16)
    # Where the OpenAI key came from: "request" (X-OpenAI-API-Key), "server", "none" (mock).
    openai_key_source = models.CharField(max_length=16)
    # Which server key a "server" job started with (a fingerprint, not the key):
    # a resumed job never switches to a different key.
    openai_key_fingerprint = models.CharField(max_length=32, blank=True)
    api_key = models.ForeignKey("crystallise.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    api_key_label = models.CharField(max_length=150, blank=True)
    owner = models.CharField(max_length=32, db_index=True, help_text="Fingerprint of the service key that created the job.")
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)
    request_hash = models.CharField(max_length=64, blank=True)

    total = models.PositiveIntegerField(default=0)
    errored = models.PositiveIntegerField(default=0)

    mode = models.CharField(max_length=8, choices=JobMode.choices, default=JobMode.ONLINE)
    service_tier = models.CharField(max_length=8, choices=ServiceTier.choices, default=ServiceTier.DEFAULT)
    # Batch lane: where items the batches could not answer go ("online": the online lane; "" none).
    fallback = models.CharField(max_length=8, blank=True, default="")
    # Batch lane: the provider batches submitted for this job (crystallise.jobs.batch keeps them).
    batches = models.JSONField(default=list, blank=True)

    estimated_cost_usd = models.DecimalField(max_digits=16, decimal_places=8, default=Decimal("0"))
    max_estimated_cost_usd = models.DecimalField(max_digits=16, decimal_places=8, null=True, blank=True)
    input_tokens = models.PositiveBigIntegerField(default=0)
    cached_input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    reasoning_tokens = models.PositiveBigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=16, decimal_places=8, default=Decimal("0"))

    error_category = models.CharField(max_length=32, null=True, blank=True)
    error_message = models.TextField(null=True, blank=True)

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Written by the running worker; also the last enqueue time of a pending job.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # The worker run that owns the job; a run that loses it stops.
    lease = models.UUIDField(null=True, blank=True, editable=False)
    attempts = models.PositiveSmallIntegerField(default=0)

    objects = JobQuerySet.as_manager()

    class Meta:
        abstract = True
        ordering = ["-created_at"]

    @classmethod
    def active_project_constraint(cls, name: str) -> models.UniqueConstraint:
        # One active job per project, enforced by the database (a partial
        # unique index), so concurrent POSTs cannot both win. Project ids are
        # namespaced by the owning key: one caller cannot block (or discover)
        # another caller's project.
        return models.UniqueConstraint(
            fields=["owner", "project_id"],
            condition=Q(status__in=ACTIVE_STATUSES) & Q(project_id__isnull=False),
            name=name,
        )

    @classmethod
    def idempotency_constraint(cls, name: str) -> models.UniqueConstraint:
        return models.UniqueConstraint(
            fields=["owner", "idempotency_key"], condition=Q(idempotency_key__isnull=False), name=name
        )

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def price_tier(self) -> str:
        """The tier this job's calls bill at unless an answer says otherwise (crystallise.config.TIERS)."""
        return "batch" if self.mode == JobMode.BATCH else self.service_tier or ServiceTier.DEFAULT

    @property
    def usage(self) -> Usage:
        return Usage(self.input_tokens, self.cached_input_tokens, self.output_tokens, self.reasoning_tokens)

    def usage_dict(self) -> dict[str, int]:
        return self.usage.as_dict()

    def actual_cost(self) -> Decimal:
        return get_backend(self.llm_backend).cost(self.model, self.usage, self.price_tier)

    @property
    def duration_seconds(self) -> float | None:
        if not self.started_at:
            return None
        end = self.finished_at or timezone.now()
        return (end - self.started_at).total_seconds()


class BaseResult(models.Model):
    """What a job's result for one input item records whatever the kind of job: its place, the
    backend that answered, the tokens it used, and the category of a failure."""

    position = models.PositiveIntegerField()
    error_category = models.CharField(max_length=32, null=True, blank=True)
    llm_backend = models.CharField(max_length=16, blank=True)
    input_tokens = models.PositiveIntegerField(default=0)
    cached_input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        abstract = True


class JobSecret(models.Model):
    """The encrypted per-request OpenAI key of an active job; deleted when the job ends."""

    job_id = models.UUIDField(primary_key=True)
    ciphertext = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "job secret (encrypted)"
