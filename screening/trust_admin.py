"""What a screening job's admin page shows of its human review: progress, evaluation, validation samples."""

from __future__ import annotations

from django.contrib import admin
from django.utils.html import format_html, format_html_join

from screening.evaluation import certification, metrics
from screening.models import ScreeningJob

TARGET_RECALL = CONFIDENCE = 0.95
SAMPLES_SHOWN = 10


def _pct(value) -> str:
    return "—" if value is None else f"{100 * value:.1f} %"


def _interval(figure) -> str:
    if figure is None:
        return "—"
    return f"{_pct(figure['estimate'])} ({_pct(figure['lower'])}–{_pct(figure['upper'])})"


class TrustAdminMixin:
    """Read-only fields for ScreeningJobAdmin (figures at target recall and confidence 0.95)."""

    trust_fieldset = ("Human review and validation",
                      {"fields": ("review_progress", "evaluation_summary", "validation_samples_table")})

    @admin.display(description="Review progress")
    def review_progress(self, job: ScreeningJob) -> str:
        c = metrics.job_counts(job)
        return (f"{c['reviewed']} of {c['screened']} results reviewed: {c['human_decided']} with a human decision, "
                f"{c['conflicts']} in conflict. Model decisions overturned: {c['overturned_to_exclude']} include → "
                f"exclude, {c['overturned_to_include']} exclude → include. Model includes not yet reviewed: "
                f"{c['unreviewed_included']}.")

    @admin.display(description="Evaluation (papers with a human decision)")
    def evaluation_summary(self, job: ScreeningJob):
        body = metrics.evaluate(job, target_recall=TARGET_RECALL, confidence=CONFIDENCE)
        if not body["evaluated"]:
            return "No paper has a human decision yet."
        wss = body["wss_at_95"]
        rows = [
            ("Evaluated papers", body["evaluated"]),
            ("Recall (95 % exact interval)", _interval(body["recall"])),
            ("Specificity", _interval(body["specificity"])),
            ("Precision", _interval(body["precision"])),
            ("WSS@95", "—" if wss is None else f"{_pct(wss['value'])} at threshold {wss['threshold']:g}"),
            ("Recommended threshold (target recall 95 %)", body["recommended_threshold"]["threshold"] or "none passes"),
            ("Flagged needs_review", _pct(body["needs_review"]["share"])),
        ]
        table = format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", rows)
        return format_html("<table><tbody>{}</tbody></table><p>{}</p>", table, body["sample_note"])

    @admin.display(description="Validation samples")
    def validation_samples_table(self, job: ScreeningJob):
        samples = list(job.validation_samples.order_by("-created_at")[:SAMPLES_SHOWN])
        if not samples:
            return "None drawn."
        rows = []
        for sample in samples:
            sample.job = job
            body = certification.sample_status(sample, target_recall=TARGET_RECALL, confidence=CONFIDENCE)
            figures = body["figures"] or {}
            certified = {None: "in review", True: "certified", False: "not certified"}[body["certified"]]
            rows.append((str(sample.pk)[:8], sample.population, f"{sample.size} of {sample.population_size}",
                         sample.seed, f"{body['progress']['decided']}/{sample.size}",
                         _pct(figures.get("recall_lower_bound")), certified))
        cells = format_html_join("", "<tr>" + "<td>{}</td>" * 7 + "</tr>", rows)
        return format_html("<table><thead><tr><th>Sample</th><th>From</th><th>Size</th><th>Seed</th><th>Decided</th>"
                           "<th>Recall lower bound</th><th>At 95 %</th></tr></thead><tbody>{}</tbody></table>", cells)
