"""Screen a labelled file and evaluate the decisions against its labels (offline on the mock backend)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.core.serializers.json import DjangoJSONEncoder

from crystallise.auth import COMMAND_LINE
from crystallise.errors import CrystalliseError
from crystallise.formats import parse_papers
from crystallise.jobs import lifecycle
from crystallise.management import concurrency, writable
from crystallise.serializers import validated
from screening.evaluation import labels as label_files
from screening.evaluation import metrics, report
from screening.evaluation.policies import policy_table
from screening.models import ScreeningJob
from screening.reviews import MAX_REVIEWS, reviews_record
from screening.second_opinion import add_second_opinion_arguments, second_opinion_argument
from screening.serializers import MAX_PAPERS, ScreeningJobCreateSerializer
from screening.services import job_create, job_run

GOLD = "gold"


def unit(value: str) -> float:
    number = float(value)
    if not 0 < number < 1:
        raise ValueError(value)
    return number


class Command(BaseCommand):
    help = ("Screen a labelled FILE (RIS, CSV, PubMed/MEDLINE, JSONL) and evaluate the decisions against its "
            "label column; prints recall, specificity, WSS@95, the recommended threshold, cost and wall time "
            "and writes them as JSON.")

    def add_arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument("--labels", required=True, help="Column (CSV), key (JSON) or tag (RIS, MEDLINE) holding "
                                                            "the reference decision: 1/0, yes/no, true/false, include/exclude")
        parser.add_argument("--criteria", required=True, help='JSON file: {"research_question", "inclusion": [...], "exclusion": [...]}')
        parser.add_argument("--model", default="gpt-5-nano")
        parser.add_argument("--threshold", default="1.0", help="0-1; a paper is included when its score reaches it (default 1.0)")
        parser.add_argument("--out", default=None, help="JSON report (default: FILE.evaluation.json)")
        parser.add_argument("--target-recall", type=unit, default=0.95, help="For the recommended threshold (default 0.95)")
        parser.add_argument("--confidence", type=unit, default=0.95, help="Of intervals and bounds (default 0.95)")
        parser.add_argument("--max-cost", default=None, help="max_estimated_cost_usd: refuse or stop the job above it")
        parser.add_argument("--concurrency", type=concurrency, default=None,
                            help="Most LLM calls in flight, 1-4096 (default: CRYSTALLISE_LLM_CONCURRENCY).")
        add_second_opinion_arguments(parser)

    def handle(self, file, labels, criteria, model, threshold, out, target_recall, confidence, max_cost, concurrency,
               **options):
        started = time.monotonic()
        path = Path(file)
        if not path.is_file():
            raise CommandError(f"No such file: {file}")
        target = writable(Path(out) if out else path.with_suffix(".evaluation.json"))
        try:
            data = path.read_bytes()
            papers = parse_papers(data, filename=path.name, max_records=MAX_PAPERS)
            gold = label_files.decisions(label_files.read_labels(data, filename=path.name, column=labels), papers,
                                         column=labels)
            body = {"model": model, "criteria": json.loads(Path(criteria).read_text()), "threshold": threshold,
                    "max_estimated_cost_usd": max_cost, "papers": papers,
                    "second_opinion": second_opinion_argument(options)}
            # The API's own validation, as `screen` does.
            job, _ = job_create(caller=COMMAND_LINE, enqueue=False, **validated(ScreeningJobCreateSerializer(data=body)))
        except CrystalliseError as exc:
            raise CommandError(exc.detail) from None
        except (OSError, ValueError) as exc:
            raise CommandError(str(exc)) from None
        self.stderr.write(f"Job {job.pk}: {job.total} papers ({sum(d == 'include' for d in gold.values())} labelled "
                          f"include), estimated ${job.estimated_cost_usd:.4f} ({job.llm_backend}).")
        screening_seconds = self.run(job, concurrency)
        job.refresh_from_db()
        if job.status != "completed":
            raise CommandError(f"Job {job.status}: {job.error_category}: {job.error_message}")
        reviews = [{"paper_id": pid, "decision": decision, "reviewer": GOLD, "note": f"label {labels}",
                    "where": f"record {number}"} for number, (pid, decision) in enumerate(gold.items(), start=1)]
        for start in range(0, len(reviews), MAX_REVIEWS):
            reviews_record(job=job, caller=COMMAND_LINE, reviews=reviews[start:start + MAX_REVIEWS])
        evaluation = metrics.evaluate(job, target_recall=target_recall, confidence=confidence)
        result = {
            "file": str(path), "labels": labels, "job_id": str(job.pk), "papers": job.total,
            "screening_seconds": screening_seconds, "wall_seconds": time.monotonic() - started,
            "methods": report.methods(job), "evaluation": evaluation,
        }
        target.write_text(json.dumps(result, indent=2, cls=DjangoJSONEncoder), encoding="utf-8")
        self.stdout.write(self.summary(result))
        self.stdout.write(f"Report: {target}")

    def run(self, job: ScreeningJob, concurrency: int | None) -> float:
        """Screen in-process (as `screen` does); Ctrl-C cancels the job."""
        started = time.monotonic()
        worker = threading.Thread(target=job_run, kwargs={"job_id": job.pk, "concurrency": concurrency}, daemon=True)
        worker.start()
        try:
            while worker.is_alive():
                worker.join(0.5)
        except KeyboardInterrupt:
            job = lifecycle.cancel(job=job)
            worker.join(10)
            raise CommandError(f"Interrupted: job {job.pk} is {job.status}; nothing was evaluated.", returncode=130) from None
        return time.monotonic() - started

    @staticmethod
    def summary(result: dict) -> str:
        e, m = result["evaluation"], result["methods"]
        level = f"{100 * e['confidence']:g} %"

        def figure(name: str) -> str:
            f = e[name]
            if f is None:
                return f"{name.capitalize()}: — (no papers to measure it on)"
            return (f"{name.capitalize()}: {f['estimate']:.3f} ({level} exact interval {f['lower']:.3f}–{f['upper']:.3f}; "
                    f"{f['successes']}/{f['trials']})")

        wss = e["wss_at_95"]
        recommended = e["recommended_threshold"]["threshold"]
        flagged = e["needs_review"]
        lines = [
            f"{result['papers']} papers screened with {m['model_reported'] or m['model_requested']} "
            f"({m['llm_backend']}) at threshold {e['threshold']:g}; {e['evaluated']} evaluated against "
            f"{result['labels']!r}.",
            f"Confusion matrix: tp {e['confusion_matrix']['tp']}, fp {e['confusion_matrix']['fp']}, "
            f"fn {e['confusion_matrix']['fn']}, tn {e['confusion_matrix']['tn']}.",
            figure("recall"), figure("specificity"), figure("precision"),
            "WSS@95: " + ("—" if wss is None else f"{wss['value']:.3f} (threshold {wss['threshold']:g}, "
                                                  f"recall {wss['recall']:.3f})"),
            f"Recommended threshold for recall ≥ {e['target_recall']:g} at {level} (fixed-sequence): "
            + ("none passes" if recommended is None else f"{recommended:g}"),
            f"Flagged needs_review: {flagged['flagged']}"
            + ("" if flagged["recall_if_checked"] is None
               else f"; recall if those are checked: {flagged['recall_if_checked']['estimate']:.3f}"),
            f"Cost: ${m['cost_usd']:.6f} ({m['usage']['input_tokens']} input / {m['usage']['output_tokens']} output "
            f"tokens). Wall time: {result['screening_seconds']:.1f} s screening, {result['wall_seconds']:.1f} s in all.",
            "Policies replayed on the labelled papers:",
            policy_table(e["policies"], level),
        ]
        return "\n".join(lines)
