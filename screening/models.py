from __future__ import annotations

from django.db import models

from crystallise.jobs.models import BaseJob, BaseResult


class CallbackStatus(models.TextChoices):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class ScreeningJob(BaseJob):
    RUN_TASK = "screening.tasks.run_screening_job"
    POLL_DEFERRED = ("cluster_assignments",)

    criteria = models.JSONField()
    threshold = models.FloatField(default=1.0)
    clusters_config = models.JSONField(default=dict)
    # Computed by the worker before screening: [{id, label, size}] and one
    # cluster id per paper position (a compact list rather than 100k row updates).
    clusters = models.JSONField(null=True, blank=True)
    cluster_assignments = models.JSONField(null=True, blank=True)
    screened = models.PositiveIntegerField(default=0)
    included = models.PositiveIntegerField(default=0)
    excluded = models.PositiveIntegerField(default=0)
    callback_url = models.URLField(max_length=2000, null=True, blank=True)
    callback_status = models.CharField(max_length=32, choices=CallbackStatus.choices, null=True, blank=True)
    callback_attempts = models.PositiveSmallIntegerField(default=0)
    # Why the last delivery failed (the receiver's status, or why it was not reached).
    callback_error = models.TextField(null=True, blank=True)

    class Meta(BaseJob.Meta):
        constraints = [
            BaseJob.active_project_constraint("screening_one_active_job_per_project"),
            BaseJob.idempotency_constraint("screening_unique_idempotency_key"),
        ]
        indexes = [models.Index(fields=["owner", "-created_at"])]

    def __str__(self) -> str:
        return f"Screening job {self.pk} ({self.status})"

    @property
    def inclusion(self) -> list[str]:
        return list(self.criteria.get("inclusion") or [])

    @property
    def exclusion(self) -> list[str]:
        return list(self.criteria.get("exclusion") or [])


class Paper(models.Model):
    job = models.ForeignKey(ScreeningJob, on_delete=models.CASCADE, related_name="papers")
    position = models.PositiveIntegerField()
    paper_id = models.CharField(max_length=500)
    title = models.TextField(blank=True)
    abstract = models.TextField(blank=True)
    keywords = models.JSONField(default=list)
    year = models.IntegerField(null=True, blank=True)
    doi = models.CharField(max_length=500, null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["job", "position"], name="screening_paper_position"),
            models.UniqueConstraint(fields=["job", "paper_id"], name="screening_paper_id"),
        ]

    def __str__(self) -> str:
        return self.paper_id


class Decision(models.TextChoices):
    INCLUDE = "include"
    EXCLUDE = "exclude"


class ScreeningResultQuerySet(models.QuerySet):
    def listing(self) -> ScreeningResultQuerySet:
        """Results with the paper fields a result shows (id, title): not its abstract, up to 20,000 characters."""
        return self.select_related("paper").defer("paper__abstract", "paper__keywords", "paper__year", "paper__doi")


class ScreeningResult(BaseResult):
    job = models.ForeignKey(ScreeningJob, on_delete=models.CASCADE, related_name="results")
    # One result per paper, enforced by the database.
    paper = models.OneToOneField(Paper, on_delete=models.CASCADE, related_name="result")
    cluster = models.IntegerField(null=True)
    decision = models.CharField(max_length=8, choices=Decision.choices, null=True)
    score = models.FloatField(null=True)
    needs_review = models.BooleanField(default=False)
    confidence = models.FloatField(null=True)
    reasoning = models.TextField(blank=True)
    criteria = models.JSONField(default=list)
    error = models.TextField(null=True, blank=True)
    filtered = models.BooleanField(default=False)

    objects = ScreeningResultQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["job", "position"], name="screening_result_position")]
        indexes = [models.Index(fields=["job", "decision", "position"])]

    def __str__(self) -> str:
        return f"Result #{self.position}: {self.decision or self.error_category}"
