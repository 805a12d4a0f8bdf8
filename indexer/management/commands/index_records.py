"""Index a CSV/RIS/JSONL file of records from the shell, resumably.

The run is an ordinary `IndexJob` owned by "cli", keyed by the file's
SHA-256, the fields and the model, executed in-process by the shared runner.
Results are persisted in batches as they come, so after a crash or Ctrl-C
the same command finds the same job and indexes only what is left; no
finished record is billed twice. A changed file (records added or edited)
gets a new job that reuses the results earlier runs have for unchanged
records. `--force` starts a fresh job and redoes every record.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import IntegrityError
from django.db.models import Count
from tqdm import tqdm

from crystallise.auth import COMMAND_LINE
from crystallise.config import DEFAULT_MODEL, validate_model
from crystallise.errors import CrystalliseError
from crystallise.formats import parse_papers
from crystallise.jobs.batch.poll import follow
from crystallise.jobs.lifecycle import cancel as job_cancel
from crystallise.jobs.models import ACTIVE_STATUSES, JobStatus
from crystallise.management import concurrency, writable
from indexer import exports
from indexer.models import IndexJob, IndexResult
from indexer.prompts import FIELDS
from indexer.services import carry_over, job_create, job_reopen, job_run

CLI_OWNER = COMMAND_LINE.fingerprint


class Command(BaseCommand):
    help = "Index records (population, intervention, outcomes, ...) from a CSV, RIS or JSONL file."

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument("--out", type=Path, help="Write all results as JSONL to this file.")
        parser.add_argument("--fields", default=",".join(FIELDS), help=f"Comma-separated subset of {', '.join(FIELDS)}.")
        parser.add_argument("--model", default=DEFAULT_MODEL)
        parser.add_argument("--concurrency", type=concurrency, default=None,
                            help="Most concurrent LLM calls, 1-4096 (default: CRYSTALLISE_LLM_CONCURRENCY).")
        parser.add_argument("--force", action="store_true", help="Redo every record in a fresh job.")
        parser.add_argument("--batch", action="store_true",
                            help="Use the provider's Batch API: half price, answers within 24 hours.")
        parser.add_argument("--poll-seconds", type=float, default=60.0,
                            help="With --batch: seconds between two polls of the batches (default 60).")

    def handle(self, *args, file: Path, out: Path | None, fields: str, model: str, concurrency: int | None,
               force: bool, batch: bool = False, poll_seconds: float = 60.0, **options):
        if out is not None:
            writable(out)
        try:
            job = self.job_for(file, fields, model, force, batch)
        except CrystalliseError as exc:
            raise CommandError(exc.detail) from None
        done = job.processed
        if done:
            self.stdout.write(f"Resuming job {job.pk}: {done} of {job.total} records already indexed are skipped.")
        started = time.monotonic()
        with tqdm(total=job.total, initial=done, unit="rec", desc="Indexing", disable=None) as bar:
            try:
                job_run(job_id=job.pk, concurrency=concurrency, on_outcome=lambda outcome: bar.update(1))
                if batch:
                    follow(IndexJob, job.pk, poll_seconds=poll_seconds,
                           on_progress=lambda j: bar.update(max(0, j.processed - bar.n)))
            except KeyboardInterrupt:
                bar.close()
                job.refresh_from_db()
                raise CommandError(
                    f"Interrupted: {job.processed} of {job.total} records are indexed and saved (job {job.pk}). "
                    "Rerun the same command to continue.", returncode=130) from None
        elapsed = time.monotonic() - started
        job.refresh_from_db()
        self.summary(job, job.processed - done, elapsed)
        if out is not None:
            rows = IndexResult.objects.filter(job=job).select_related("record").order_by("position")
            _, lines = exports.stream(job, rows, "jsonl")
            with out.open("w", encoding="utf-8") as fh:
                fh.writelines(lines)
            self.stdout.write(f"Results written to {out}")
        if job.status == JobStatus.FAILED:
            raise CommandError(f"The job failed ({job.error_category}): {job.error_message}")

    def job_for(self, file: Path, fields: str, model: str, force: bool, batch: bool = False) -> IndexJob:
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise CommandError(f"Cannot read {file}: {exc.strerror}.") from None
        wanted = [f.strip() for f in fields.split(",") if f.strip()]
        unknown = sorted(set(wanted) - set(FIELDS))
        if unknown or not wanted:
            raise CommandError(f"Unknown or missing fields {unknown}; choose from {', '.join(FIELDS)}.")
        wanted = [name for name in FIELDS if name in wanted]
        model = validate_model(model)
        digest = hashlib.sha256(data).hexdigest()
        key = f"file:{digest}:{model}:{','.join(wanted)}" + (":batch" if batch else "")
        existing = IndexJob.objects.filter(owner=CLI_OWNER, idempotency_key=key).first()
        if existing is not None and not force:
            return job_reopen(job=existing)
        if existing is not None:
            if existing.status in ACTIVE_STATUSES:
                job_cancel(job=existing)
            # The old job stays for the record but no longer answers to this key.
            IndexJob.objects.filter(pk=existing.pk).update(idempotency_key=None)
        papers = parse_papers(data, filename=file.name, field="file")
        records = [{"id": p["id"], "title": p.get("title") or "", "abstract": p.get("abstract")} for p in papers]
        try:
            job = job_create(caller=COMMAND_LINE, idempotency_key=key, model=model, records=records,
                             fields=wanted, source=str(file), mode="batch" if batch else "online", enqueue=False)
        except IntegrityError:
            # Another run of the same file created its job since the lookup above: continue that one.
            return job_reopen(job=IndexJob.objects.get(owner=CLI_OWNER, idempotency_key=key))
        if not force:
            carried = carry_over(job, owner=CLI_OWNER)
            if carried:
                self.stdout.write(f"{carried} of {job.total} records were indexed by an earlier run (same id, title, "
                                  "abstract, model and fields): their results are reused, not billed again.")
            job.refresh_from_db()
        return job

    def summary(self, job: IndexJob, new: int, elapsed: float) -> None:
        counts = dict(IndexResult.objects.filter(job=job).values_list("indexing_status").annotate(n=Count("id")))
        usage = job.usage
        per_status = ", ".join(f"{status} {n}" for status, n in sorted(counts.items()))
        rate = new / elapsed if elapsed > 0 else 0.0
        self.stdout.write(self.style.SUCCESS(f"Job {job.pk}: {job.status}") if job.status == JobStatus.COMPLETED
                          else self.style.WARNING(f"Job {job.pk}: {job.status}"))
        self.stdout.write(f"  records: {job.total} total, {job.ok} ok, {job.errored} not ok ({per_status or 'none'})")
        self.stdout.write(f"  this run: {new} records in {elapsed:.1f}s ({rate:.1f} records/s)")
        self.stdout.write(f"  tokens: {usage.input_tokens} input ({usage.cached_input_tokens} cached), "
                          f"{usage.output_tokens} output; cost ${job.actual_cost():.6f} (estimated ${job.estimated_cost_usd:.6f})")
