"""Screen a file of papers from the shell with the same pipeline as the API."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from crystallise.auth import COMMAND_LINE
from crystallise.errors import CrystalliseError
from crystallise.formats import parse_papers
from crystallise.jobs import lifecycle
from crystallise.jobs.batch.poll import follow
from crystallise.management import concurrency, writable
from crystallise.serializers import validated
from screening import exports
from screening.models import ScreeningJob, ScreeningResult
from screening.second_opinion import add_second_opinion_arguments, second_opinion_argument
from screening.serializers import MAX_PAPERS, ScreeningJobCreateSerializer
from screening.services import job_create, job_run


class Command(BaseCommand):
    help = "Screen FILE (RIS, CSV, PubMed/MEDLINE, JSONL) against criteria; writes a CSV of results."

    def add_arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument("--criteria", required=True, help='JSON file: {"research_question", "inclusion": [...], "exclusion": [...]}')
        parser.add_argument("--model", default="gpt-5-nano")
        parser.add_argument("--threshold", default="1.0", help="0-1; a paper is included when its score reaches it (default 1.0)")
        parser.add_argument("--clusters", default="none", choices=["none", "topic", "study_design"])
        parser.add_argument("--out", default=None, help="CSV output (default: FILE.screened.csv)")
        parser.add_argument("--max-cost", default=None, help="max_estimated_cost_usd: refuse or stop the job above it")
        parser.add_argument("--concurrency", type=concurrency, default=None,
                            help="Most concurrent LLM calls, 1-4096 (default: CRYSTALLISE_LLM_CONCURRENCY).")
        add_second_opinion_arguments(parser)
        parser.add_argument("--batch", action="store_true",
                            help="Use the provider's Batch API: half price, answers within 24 hours.")
        parser.add_argument("--poll-seconds", type=float, default=60.0,
                            help="With --batch: seconds between two polls of the batches (default 60).")

    def handle(self, file, criteria, model, threshold, clusters, out, max_cost, concurrency, **options):
        path = Path(file)
        if not path.is_file():
            raise CommandError(f"No such file: {file}")
        target = writable(Path(out) if out else path.with_suffix(".screened.csv"))
        try:
            papers = parse_papers(path.read_bytes(), filename=path.name, max_records=MAX_PAPERS)
            data = {"model": model, "criteria": json.loads(Path(criteria).read_text()), "threshold": threshold,
                    "clusters": {"by": clusters}, "max_estimated_cost_usd": max_cost, "papers": papers,
                    "second_opinion": second_opinion_argument(options)}
            if options.get("batch"):
                data["mode"] = "batch"
            # The API's own validation: the shell accepts exactly what POST /v1/screening/jobs accepts.
            job, _ = job_create(caller=COMMAND_LINE, enqueue=False, **validated(ScreeningJobCreateSerializer(data=data)))
        except CrystalliseError as exc:
            raise CommandError(exc.detail) from None
        except (OSError, ValueError) as exc:
            raise CommandError(str(exc)) from None
        self.stderr.write(f"Job {job.pk}: {job.total} papers, estimated ${job.estimated_cost_usd:.4f} ({job.llm_backend}).")
        worker = threading.Thread(target=job_run, kwargs={"job_id": job.pk, "concurrency": concurrency}, daemon=True)
        worker.start()
        try:
            with tqdm(total=job.total, unit="paper", disable=None) as bar:
                while worker.is_alive():
                    worker.join(0.5)
                    screened = ScreeningJob.objects.values_list("screened", flat=True).get(pk=job.pk)
                    bar.update(screened - bar.n)
                if options.get("batch"):
                    follow(ScreeningJob, job.pk, poll_seconds=options.get("poll_seconds", 60.0),
                           on_progress=lambda j: bar.update(j.screened - bar.n))
        except KeyboardInterrupt:
            job = lifecycle.cancel(job=job)
            worker.join(10)
            raise CommandError(f"Interrupted: job {job.pk} is {job.status} with {job.screened} of {job.total} papers "
                               "screened; no results file was written.", returncode=130) from None
        job.refresh_from_db()
        rows = ScreeningResult.objects.filter(job=job).select_related("paper").order_by("position")
        _, stream = exports.stream(job, rows, "csv")
        with target.open("w", encoding="utf-8", newline="") as fh:
            for chunk in stream:
                fh.write(chunk)
        self.stdout.write(
            f"{job.status}: {job.included} included, {job.excluded} excluded, {job.errored} errors; "
            f"{job.input_tokens} input / {job.output_tokens} output tokens, ${job.cost_usd:.6f}. Results: {target}"
        )
        if job.status != "completed":
            raise CommandError(f"Job {job.status}: {job.error_category}: {job.error_message}")

