from __future__ import annotations

from django.db import models

from crystallise.jobs.models import BaseJob, BaseResult
from indexer.precheck import Status
from indexer.prompts import FIELDS

STATUS_CHOICES = [(s, s) for s in Status.ALL]


def all_fields() -> list[str]:
    return list(FIELDS)


class IndexJob(BaseJob):
    RUN_TASK = "indexer.tasks.run_index_job"
    # The job kind the batch lane's scheduled polls run it with.
    KIND = "indexer.services.IndexKind"

    fields = models.JSONField(default=all_fields)
    # Where the job came from: "api" or the file name given to `index_records`.
    source = models.CharField(max_length=500, default="api")
    processed = models.PositiveIntegerField(default=0)
    ok = models.PositiveIntegerField(default=0)

    class Meta(BaseJob.Meta):
        constraints = [BaseJob.idempotency_constraint("indexer_unique_idempotency_key")]
        indexes = [models.Index(fields=["owner", "-created_at"])]

    def __str__(self) -> str:
        return f"Index job {self.pk} ({self.status})"


class Record(models.Model):
    job = models.ForeignKey(IndexJob, on_delete=models.CASCADE, related_name="records")
    position = models.PositiveIntegerField()
    record_id = models.CharField(max_length=500)
    title = models.TextField(blank=True)
    # Null when the record had no abstract at all (reported as missing_abstract).
    abstract = models.TextField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["job", "position"], name="indexer_record_position"),
            models.UniqueConstraint(fields=["job", "record_id"], name="indexer_record_id"),
        ]

    def __str__(self) -> str:
        return self.record_id


class IndexResultQuerySet(models.QuerySet):
    def listing(self) -> IndexResultQuerySet:
        """Results with the record fields a result shows (id, title): not its abstract."""
        return self.select_related("record").defer("record__abstract")


class IndexResult(BaseResult):
    job = models.ForeignKey(IndexJob, on_delete=models.CASCADE, related_name="results")
    # One result per record, enforced by the database.
    record = models.OneToOneField(Record, on_delete=models.CASCADE, related_name="result")
    indexing_status = models.CharField(max_length=32, choices=STATUS_CHOICES)
    extraction_error = models.TextField(null=True, blank=True)
    fields = models.JSONField(null=True, blank=True)

    objects = IndexResultQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["job", "position"], name="indexer_result_position")]
        indexes = [models.Index(fields=["job", "indexing_status", "position"])]

    def __str__(self) -> str:
        return f"Result #{self.position}: {self.indexing_status}"
