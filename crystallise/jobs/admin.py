"""What the screening and indexing job admins share: a read-only list and detail, cancel and resubmit, paged results.

Job rows are never edited by hand. Operating on them (cancel, resubmit) needs
the model's `change` permission; viewing needs `view`.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from crystallise.errors import CrystalliseError
from crystallise.jobs import lifecycle
from crystallise.jobs.costs import lane_label
from crystallise.jobs.models import ACTIVE_STATUSES, BaseJob, JobStatus

RESULTS_PER_PAGE = 100
# Resubmitting re-reads every paper of a job; a handful at a time keeps one request bounded.
MAX_RESUBMIT = 10


def usd(value) -> str:
    return "—" if value is None else f"${value:.6f}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class JobAdmin(admin.ModelAdmin):
    """Subclasses set `done_field` (the progress counter), `result_model`, `result_headers` and `result_cells`."""

    done_field = "processed"
    result_model = None
    result_headers: tuple[str, ...] = ()
    # Large per-row columns the admin never shows (never loaded, never in a form).
    deferred: tuple[str, ...] = ()

    list_display = (
        "short_id", "status", "progress", "model", "lane", "project_id", "key", "estimated", "actual",
        "run_time", "error", "created",
    )
    list_display_links = ("short_id",)
    list_filter = ("status", "model", "mode", "service_tier", "error_category", "created_at")
    search_fields = ("id", "project_id")
    ordering = ("-created_at",)
    list_select_related = ("api_key",)
    list_per_page = 50
    date_hierarchy = None
    actions = ("cancel_jobs", "resubmit_jobs")

    # --- permissions: read-only rows; cancel/resubmit need `change` ---------
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        # Deleting cascades to up to 100,000 papers and results; clients delete finished jobs over the API.
        return False

    def has_operate_permission(self, request: HttpRequest) -> bool:
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}")

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).defer(*self.deferred)

    # --- list columns --------------------------------------------------------
    @admin.display(description="Job", ordering="id")
    def short_id(self, job: BaseJob) -> str:
        return str(job.pk)[:8]

    @admin.display(description="Progress")
    def progress(self, job: BaseJob) -> str:
        done = getattr(job, self.done_field)
        errored = f" ({job.errored} errored)" if job.errored else ""
        return f"{done}/{job.total}{errored}"

    @admin.display(description="API key", ordering="api_key_label")
    def key(self, job: BaseJob):
        label = job.api_key_label or "—"
        if job.api_key_id is None:
            return label
        url = reverse("admin:crystallise_apikey_change", args=[job.api_key_id])
        revoked = " (revoked)" if job.api_key and not job.api_key.is_active else ""
        return format_html('<a href="{}">{}</a>{}', url, label, revoked)

    @admin.display(description="Lane", ordering="mode")
    def lane(self, job: BaseJob) -> str:
        """Where the job's calls went, which sets their price: online, online (flex) or batch."""
        return lane_label(job.mode, job.service_tier)

    @admin.display(description="Provider batches")
    def batches_table(self, job: BaseJob):
        """The batch lane's batches: id, status, round, request counts, why one failed."""
        if not job.batches:
            return "—"
        rows = format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}/{}/{}</td><td>{}</td></tr>",
                                map(_batch_cells, job.batches))
        return format_html("<table><thead><tr><th>Batch</th><th>Status</th><th>Round</th><th>Completed/failed/total"
                           "</th><th>Error</th></tr></thead><tbody>{}</tbody></table>", rows)

    @admin.display(description="Estimated", ordering="estimated_cost_usd")
    def estimated(self, job: BaseJob) -> str:
        return usd(job.estimated_cost_usd)

    @admin.display(description="Actual cost", ordering="cost_usd")
    def actual(self, job: BaseJob) -> str:
        return usd(job.cost_usd)

    @admin.display(description="Error", ordering="error_category")
    def error(self, job: BaseJob) -> str:
        return job.error_category or ""

    @admin.display(description="Created (UTC)", ordering="created_at")
    def created(self, job: BaseJob) -> str:
        return timezone.localtime(job.created_at).strftime("%Y-%m-%d %H:%M")

    @admin.display(description="Duration")
    def run_time(self, job: BaseJob) -> str:
        return duration(job.duration_seconds)

    # --- detail --------------------------------------------------------------
    @admin.display(description="Tokens")
    def usage_summary(self, job: BaseJob) -> str:
        return ", ".join(f"{name.replace('_', ' ')}: {count:,}" for name, count in job.usage_dict().items())

    @admin.display(description="Results")
    def results_link(self, job: BaseJob):
        if job.pk is None:
            return "—"
        opts = self.opts
        url = reverse(f"admin:{opts.app_label}_{opts.model_name}_results", args=[job.pk])
        done = getattr(job, self.done_field)
        return format_html('<a href="{}" id="job-results-link">View {} result{} ({} per page)</a>',
                           url, done, "" if done == 1 else "s", RESULTS_PER_PAGE)

    @admin.display(description="Max estimated cost")
    def cap(self, job: BaseJob) -> str:
        return usd(job.max_estimated_cost_usd)

    # --- actions -------------------------------------------------------------
    @admin.action(description="Cancel selected active jobs", permissions=["operate"])
    def cancel_jobs(self, request: HttpRequest, queryset: QuerySet) -> None:
        cancelled = 0
        for job in queryset.filter(status__in=ACTIVE_STATUSES):
            job = lifecycle.cancel(job=job)
            if job.status == JobStatus.CANCELLED:
                cancelled += 1
        skipped = queryset.count() - cancelled
        note = f" {skipped} already finished, left as they were." if skipped else ""
        level = messages.SUCCESS if cancelled else messages.WARNING
        self.message_user(request, f"Cancelled {cancelled} job{'' if cancelled == 1 else 's'}.{note}", level)

    @admin.action(description="Resubmit selected jobs (same inputs, new job)", permissions=["operate"])
    def resubmit_jobs(self, request: HttpRequest, queryset: QuerySet) -> None:
        jobs = list(queryset[: MAX_RESUBMIT + 1])
        if len(jobs) > MAX_RESUBMIT:
            self.message_user(request, f"Resubmit at most {MAX_RESUBMIT} jobs at a time.", messages.ERROR)
            return
        for job in jobs:
            try:
                new_job = self.resubmit(job)
            except CrystalliseError as exc:
                self.message_user(request, f"Job {job.pk} was not resubmitted: {exc.detail}", messages.ERROR)
                continue
            url = reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_change", args=[new_job.pk])
            self.message_user(
                request, format_html('Job {} resubmitted as <a href="{}">{}</a>.', job.pk, url, new_job.pk),
                messages.SUCCESS,
            )

    def resubmit(self, job: BaseJob) -> BaseJob:
        raise NotImplementedError

    # --- paged results -------------------------------------------------------
    def get_urls(self):
        opts = self.opts
        return [
            path("<uuid:object_id>/results/", self.admin_site.admin_view(self.results_view),
                 name=f"{opts.app_label}_{opts.model_name}_results"),
            *super().get_urls(),
        ]

    def results_queryset(self, job: BaseJob) -> QuerySet:
        return self.result_model.objects.filter(job=job).order_by("position")

    def result_cells(self, result) -> tuple:
        raise NotImplementedError

    def results_view(self, request: HttpRequest, object_id) -> HttpResponse:
        job = self.get_queryset(request).filter(pk=object_id).first()
        if job is None or not self.has_view_permission(request, job):
            raise Http404("No such job.")
        # LIMIT/OFFSET pages over the (job, position) index: a page reads 100 rows whatever the job's size.
        page = Paginator(self.results_queryset(job), RESULTS_PER_PAGE).get_page(request.GET.get("page"))
        rows = format_html_join("", "<tr>{}</tr>", (
            (format_html_join("", "<td>{}</td>", ((cell,) for cell in self.result_cells(result))),)
            for result in page.object_list
        ))
        opts = self.opts
        context = {
            **self.admin_site.each_context(request),
            "title": f"Results of {job}",
            "opts": opts,
            "job": job,
            "page": page,
            "headers": self.result_headers,
            "rows": rows,
            "job_url": reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[job.pk]),
        }
        return TemplateResponse(request, "admin/crystallise/job_results.html", context)


def truncate(text: str | None, limit: int = 160) -> str:
    if not text:
        return ""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _batch_cells(batch: dict) -> tuple:
    """One row of the job page's batches table: id, status, round, completed/failed/total, error."""
    counts = batch.get("counts") or {}
    return (batch.get("id") or "(not created)", batch.get("status"), batch.get("round", 1), counts.get("completed", 0),
            counts.get("failed", 0), counts.get("total", batch.get("requests", 0)), batch.get("error") or "")
