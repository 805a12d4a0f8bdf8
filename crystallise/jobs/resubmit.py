"""What every resubmission shares: who the new job belongs to, and which jobs cannot be resubmitted."""

from __future__ import annotations

from crystallise.auth import Caller
from crystallise.errors import ValidationError
from crystallise.jobs.models import BaseJob
from crystallise.keyvault import SOURCE_REQUEST


def original_caller(job: BaseJob) -> Caller:
    """The caller that submitted `job`: same owner fingerprint and API key, so that client sees the new job."""
    key = job.api_key if job.api_key_id else None
    return Caller(label=key.label if key else job.api_key_label, fingerprint=job.owner, api_key_id=job.api_key_id)


def check_resubmittable(job: BaseJob) -> None:
    if job.api_key_id and not job.api_key.is_active:
        raise ValidationError(f"Job {job.pk} was submitted with API key {job.api_key.label}, which has been revoked.")
    if job.openai_key_source == SOURCE_REQUEST:
        # The per-request key was deleted when the job ended; it is never kept to run again.
        raise ValidationError(
            f"Job {job.pk} ran on a per-request OpenAI key (X-OpenAI-API-Key), which is not kept. "
            "The client must submit it again with its key."
        )
