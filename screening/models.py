from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone

from crystallise.jobs.models import BaseJob, BaseResult


class CallbackStatus(models.TextChoices):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class ScreeningJob(BaseJob):
    RUN_TASK = "screening.tasks.run_screening_job"
    # The job kind the batch lane's scheduled polls run it with.
    KIND = "screening.services.ScreeningKind"
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
    # {"model", "apply_to", "rule"}: a second model's opinion on some papers (screening.second_opinion).
    second_opinion = models.JSONField(null=True, blank=True)
    # {model: {input_tokens, ..., cost_usd}} when more than the job's model answered (second opinion).
    usage_by_model = models.JSONField(default=dict, blank=True)
    # Recorded by the worker for the methods report: the model name the provider answered
    # with (e.g. a dated snapshot of `model`; empty on the mock backend) and the SHA-256 of
    # the system prompt sent with every paper.
    provider_model = models.CharField(max_length=200, blank=True, default="")
    prompt_sha256 = models.CharField(max_length=64, blank=True, default="")

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
        return self.select_related("paper", "review").defer(
            "paper__abstract", "paper__keywords", "paper__year", "paper__doi", "review__reviewers")


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
    # Both models' opinions when a second model was asked about this paper (screening.second_opinion), else null.
    opinions = models.JSONField(null=True, blank=True)

    objects = ScreeningResultQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["job", "position"], name="screening_result_position")]
        indexes = [models.Index(fields=["job", "decision", "position"])]

    def __str__(self) -> str:
        return f"Result #{self.position}: {self.decision or self.error_category}"


# --- human review and validation -----------------------------------------------------------
# These rows point at results without a database constraint (db_constraint=False, DO_NOTHING):
# deleting a job removes its results in one set-based statement (screening.services.job_delete)
# and these rows with the job (on_delete=CASCADE on `job`), so no per-row cascade is needed.


class HumanReview(models.Model):
    """One reviewer's decision on one paper, as it was recorded. Never updated or deleted (the job's
    deletion removes them); a reviewer's latest row is the one that counts (kept in ReviewState)."""

    job = models.ForeignKey(ScreeningJob, on_delete=models.CASCADE, related_name="human_reviews")
    result = models.ForeignKey(ScreeningResult, on_delete=models.DO_NOTHING, db_constraint=False,
                               related_name="human_reviews")
    reviewer = models.CharField(max_length=100)
    decision = models.CharField(max_length=8, choices=Decision.choices)
    # This reviewer's decision on this paper before this one (null: their first).
    previous_decision = models.CharField(max_length=8, choices=Decision.choices, null=True, blank=True)
    note = models.TextField(blank=True)
    api_key = models.ForeignKey("crystallise.ApiKey", null=True, blank=True, on_delete=models.SET_NULL,
                                related_name="+")
    api_key_label = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["result", "id"])]

    def __str__(self) -> str:
        return f"{self.reviewer}: {self.previous_decision or '—'} → {self.decision}"


class ReviewState(models.Model):
    """Where the human review of one result stands: each reviewer's latest decision, and what they add up to.

    `human_decision` is the reviewers' decision when they all agree, else null with `conflict` set.
    Kept by screening.reviews in the transaction that records the reviews, so result lists can
    filter on it with a join instead of re-reading the history.
    """

    job = models.ForeignKey(ScreeningJob, on_delete=models.CASCADE, related_name="review_states")
    result = models.OneToOneField(ScreeningResult, on_delete=models.DO_NOTHING, db_constraint=False,
                                  related_name="review")
    # {reviewer: {"decision": "include"|"exclude", "note": str}}
    reviewers = models.JSONField(default=dict)
    human_decision = models.CharField(max_length=8, choices=Decision.choices, null=True, blank=True)
    conflict = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["job", "human_decision"])]

    def __str__(self) -> str:
        return f"Review of result {self.result_id}: {self.human_decision or ('conflict' if self.conflict else '—')}"

    def settle(self) -> None:
        """Derive `human_decision` and `conflict` from the reviewers' latest decisions."""
        decisions = {entry["decision"] for entry in self.reviewers.values()}
        self.conflict = len(decisions) > 1
        self.human_decision = next(iter(decisions)) if len(decisions) == 1 else None


class SamplePopulation(models.TextChoices):
    EXCLUDED = "excluded"
    ALL = "all"


class ValidationSample(models.Model):
    """A uniform random sample of a job's results, drawn once and kept (seed included) for certification."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    job = models.ForeignKey(ScreeningJob, on_delete=models.CASCADE, related_name="validation_samples")
    population = models.CharField(max_length=16, choices=SamplePopulation.choices)
    size = models.PositiveIntegerField()
    seed = models.PositiveBigIntegerField()
    # The population when the sample was drawn: its size, and the threshold that defined it.
    population_size = models.PositiveIntegerField()
    threshold = models.FloatField()
    api_key = models.ForeignKey("crystallise.ApiKey", null=True, blank=True, on_delete=models.SET_NULL,
                                related_name="+")
    api_key_label = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Validation sample {self.pk} ({self.size} of {self.population_size} {self.population})"


class ValidationSampleItem(models.Model):
    sample = models.ForeignKey(ValidationSample, on_delete=models.CASCADE, related_name="items")
    result = models.ForeignKey(ScreeningResult, on_delete=models.DO_NOTHING, db_constraint=False,
                               related_name="+")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["sample", "result"], name="screening_sample_item_unique")]

    def __str__(self) -> str:
        return f"{self.sample_id}: result {self.result_id}"
