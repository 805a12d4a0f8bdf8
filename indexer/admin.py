import json

from django.contrib import admin

from crystallise.jobs.admin import JobAdmin, truncate
from indexer.models import IndexJob, IndexResult
from indexer.services import job_resubmit


@admin.register(IndexJob)
class IndexJobAdmin(JobAdmin):
    done_field = "processed"
    result_model = IndexResult
    result_headers = ("#", "Record", "Title", "Status", "Fields", "Error")
    fieldsets = (
        (None, {"fields": ("id", "status", "model", "project_id", "llm_backend", "source", "created_at",
                           "started_at", "finished_at", "run_time")}),
        ("Submitted by", {"fields": ("api_key_label", "openai_key_source", "owner", "idempotency_key")}),
        ("Inputs", {"fields": ("fields",)}),
        ("Progress", {"fields": ("progress_detail", "results_link")}),
        ("Lane", {"fields": ("lane", "service_tier", "fallback", "batches_table")}),
        ("Cost", {"fields": ("estimated", "actual", "cap", "usage_summary")}),
        ("Error", {"fields": ("error_category", "error_message")}),
    )

    @admin.display(description="Progress")
    def progress_detail(self, job: IndexJob) -> str:
        return f"{job.processed}/{job.total} processed: {job.ok} indexed, {job.errored} not indexed"

    def resubmit(self, job: IndexJob) -> IndexJob:
        return job_resubmit(job=job)

    def results_queryset(self, job: IndexJob):
        return super().results_queryset(job).select_related("record").only(
            "position", "indexing_status", "fields", "error_category", "extraction_error",
            "record__record_id", "record__title")

    def result_cells(self, result: IndexResult) -> tuple:
        fields = json.dumps(result.fields, ensure_ascii=False) if result.fields else ""
        error = result.error_category or result.extraction_error or ""
        return (result.position, result.record.record_id, truncate(result.record.title, 120), result.indexing_status,
                truncate(fields, 240), truncate(error))
