import json

from django.contrib import admin
from django.utils.html import format_html, format_html_join

from crystallise.jobs.admin import JobAdmin, truncate
from screening.models import ScreeningJob, ScreeningResult
from screening.services import job_resubmit
from screening.trust_admin import TrustAdminMixin


@admin.register(ScreeningJob)
class ScreeningJobAdmin(TrustAdminMixin, JobAdmin):
    done_field = "screened"
    result_model = ScreeningResult
    # One cluster id per paper: up to 100,000 ints per row.
    deferred = exclude = ("cluster_assignments",)
    result_headers = ("#", "Paper", "Title", "Decision", "Score", "Needs review", "Confidence", "Cluster", "Error", "Reasoning")
    fieldsets = (
        (None, {"fields": ("id", "status", "model", "project_id", "llm_backend", "created_at", "started_at",
                           "finished_at", "run_time")}),
        ("Submitted by", {"fields": ("api_key_label", "openai_key_source", "owner", "idempotency_key")}),
        ("Inputs", {"fields": ("criteria_summary", "threshold", "clusters_summary", "callback_url")}),
        ("Progress", {"fields": ("progress_detail", "results_link", "callback_status", "callback_attempts", "callback_error")}),
        ("Clusters", {"fields": ("cluster_table",)}),
        TrustAdminMixin.trust_fieldset,
        ("Lane", {"fields": ("lane", "service_tier", "fallback", "batches_table")}),
        ("Cost", {"fields": ("estimated", "actual", "cap", "usage_summary")}),
        ("Error", {"fields": ("error_category", "error_message")}),
    )

    @admin.display(description="Criteria")
    def criteria_summary(self, job: ScreeningJob):
        question = job.criteria.get("research_question") or "—"
        items = [(f"I{i + 1}", text) for i, text in enumerate(job.inclusion)]
        items += [(f"E{i + 1}", text) for i, text in enumerate(job.exclusion)]
        rows = format_html_join("", "<li><strong>{}</strong> {}</li>", items)
        return format_html('<p>Research question: {}</p><ul style="margin-left: 0; padding-left: 0; list-style: none">{}</ul>',
                           question, rows)

    @admin.display(description="Clusters config")
    def clusters_summary(self, job: ScreeningJob) -> str:
        return json.dumps(job.clusters_config, sort_keys=True)

    @admin.display(description="Progress")
    def progress_detail(self, job: ScreeningJob) -> str:
        return (f"{job.screened}/{job.total} screened: {job.included} included, {job.excluded} excluded, "
                f"{job.errored} errored")

    @admin.display(description="Clusters")
    def cluster_table(self, job: ScreeningJob):
        if not job.clusters:
            return "Not clustered yet." if job.is_active else "—"
        rows = format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                                ((c.get("id"), c.get("label"), c.get("size")) for c in job.clusters))
        return format_html("<table><thead><tr><th>Id</th><th>Label</th><th>Papers</th></tr></thead>"
                           "<tbody>{}</tbody></table>", rows)

    def resubmit(self, job: ScreeningJob) -> ScreeningJob:
        return job_resubmit(job=job)

    def results_queryset(self, job: ScreeningJob):
        return super().results_queryset(job).select_related("paper").only(
            "position", "decision", "score", "needs_review", "confidence", "cluster", "error_category",
            "reasoning", "paper__paper_id", "paper__title")

    def result_cells(self, result: ScreeningResult) -> tuple:
        score = "—" if result.score is None else f"{result.score:.2f}"
        confidence = "—" if result.confidence is None else f"{result.confidence:.2f}"
        return (result.position, result.paper.paper_id, truncate(result.paper.title, 120), result.decision or "—",
                score, "yes" if result.needs_review else "", confidence,
                "—" if result.cluster is None else result.cluster, result.error_category or "",
                truncate(result.reasoning))
