"""Resubmit a screening job with the same inputs (operators' admin action).

Kept out of `screening/services.py` only while that module is being
reworked; it belongs there (`job_resubmit`).
"""

from __future__ import annotations

from crystallise.jobs.resubmit import check_resubmittable, original_caller
from screening.models import ScreeningJob
from screening.services import job_create


def job_resubmit(*, job: ScreeningJob) -> ScreeningJob:
    """A new job from the stored inputs and papers, created through the API's service (estimate, budgets, enqueue).

    Raises the service's errors (`BudgetError`, `ConflictError`, `AuthError`…)
    and `ValidationError` for jobs that ran on a per-request OpenAI key.
    """
    check_resubmittable(job)
    payload = {
        "model": job.model,
        "project_id": job.project_id,
        "criteria": job.criteria,
        "threshold": job.threshold,
        "clusters": job.clusters_config,
        "max_estimated_cost_usd": job.max_estimated_cost_usd,
        "callback_url": job.callback_url,
    }
    rows = job.papers.order_by("position").values_list("paper_id", "title", "abstract", "keywords", "year", "doi")
    papers = [
        {"id": pid, "title": title, "abstract": abstract, "keywords": keywords or [], "year": year, "doi": doi}
        for pid, title, abstract, keywords, year, doi in rows.iterator(chunk_size=2000)
    ]
    new_job, _ = job_create(caller=original_caller(job), payload=payload, papers=papers, request_openai_key=None)
    return new_job
