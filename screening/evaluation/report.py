"""The screening stage as a systematic review reports it: PRISMA 2020 counts and a methods paragraph
(PRISMA item 8, RAISE) with the validation figures, as JSON and as Markdown."""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.db.models import Count, Q
from django.utils import timezone

from crystallise.llm.backends import get_backend
from screening import prompts
from screening.evaluation.certification import sample_status
from screening.models import HumanReview, ScreeningJob, ScreeningResult


def prisma_counts(job: ScreeningJob) -> dict:
    """This stage's flow (one query). screened = excluded by automation + excluded by humans + included + awaiting review."""
    no_human = Q(review__isnull=True)
    counts = ScreeningResult.objects.filter(job=job).aggregate(
        screened=Count("id"),
        excluded_by_automation=Count("id", filter=Q(decision="exclude") & no_human),
        excluded_by_automation_flagged=Count("id", filter=Q(decision="exclude", needs_review=True) & no_human),
        excluded_by_cluster_filter=Count("id", filter=Q(filtered=True) & no_human),
        excluded_by_humans=Count("id", filter=Q(review__human_decision="exclude")),
        overturned_include_to_exclude=Count("id", filter=Q(decision="include", review__human_decision="exclude")),
        overturned_exclude_to_include=Count("id", filter=Q(decision="exclude", review__human_decision="include")),
        included=Count("id", filter=Q(review__human_decision="include")),
        awaiting_review=Count("id", filter=Q(review__conflict=True)
                              | (no_human & (Q(decision="include") | Q(decision__isnull=True)))),
        conflicts=Count("id", filter=Q(review__conflict=True)),
        errored=Count("id", filter=Q(decision__isnull=True)),
    )
    return {"records": job.total, **counts, "not_screened": job.total - counts["screened"]}


def _prompt_hash(job: ScreeningJob) -> tuple[str, str]:
    if job.prompt_sha256:
        return job.prompt_sha256, "recorded when the job ran"
    digest = hashlib.sha256(prompts.system_prompt(job.criteria).encode()).hexdigest()
    return digest, "computed from this service version's prompt (not recorded when the job ran)"


def methods(job: ScreeningJob) -> dict:
    prompt_sha256, prompt_source = _prompt_hash(job)
    return {
        "service": "Crystallise",
        "service_version": settings.SPECTACULAR_SETTINGS.get("VERSION"),
        "lane": getattr(job, "mode", "online"),
        "llm_backend": job.llm_backend,
        "model_requested": job.model,
        "model_reported": job.provider_model or None,
        "run_started_at": job.started_at,
        "run_finished_at": job.finished_at,
        "status": job.status,
        "prompt_sha256": prompt_sha256,
        "prompt_sha256_source": prompt_source,
        "research_question": job.criteria.get("research_question") or None,
        "inclusion": job.inclusion,
        "exclusion": job.exclusion,
        "threshold": job.threshold,
        "clusters": job.clusters_config,
        "second_opinion": job.second_opinion,
        "cost_usd": float(job.cost_usd),
        "usage": job.usage_dict(),
        "reviewers": HumanReview.objects.filter(job=job).values("reviewer").distinct().count(),
    }


def build(job: ScreeningJob, *, target_recall: float, confidence: float) -> dict:
    samples = [sample_status(sample, target_recall=target_recall, confidence=confidence)
               for sample in job.validation_samples.order_by("created_at")]
    for sample in samples:
        # The report cites the sample; its paper ids are at GET .../validation-samples/{id}.
        sample.pop("paper_ids")
        sample.pop("pending_paper_ids")
    report = {
        "job_id": str(job.pk),
        "generated_at": timezone.now(),
        "target_recall": target_recall,
        "confidence": confidence,
        "prisma": prisma_counts(job),
        "methods": methods(job),
        "validation": samples,
    }
    report["methods_text"] = methods_text(report)
    return report


def _pct(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{100 * value:.{digits}f} %"


def _date(value) -> str:
    return value.strftime("%Y-%m-%d")


def _validation_sentence(sample: dict, confidence: float) -> str:
    figures, level = sample["figures"], f"{100 * confidence:g} %"
    if figures is None:
        return (f"A validation sample of {sample['size']} of the {sample['population_size']} {sample['from']} records "
                f"(seed {sample['seed']}) is under human review ({sample['progress']['decided']} decided).")
    verdict = "certifies" if sample["certified"] else "does not certify"
    if figures["method"] == "elusion":
        return (f"A uniform random sample of {figures['sampled']} of the {figures['excluded']} records the model "
                f"excluded (seed {sample['seed']}) was screened by humans, who found {figures['found_includes']} "
                f"include(s); the one-sided {level} upper bound on includes missed among all excluded records is "
                f"{figures['missed_includes_upper_bound']:.1f}, and with {figures['confirmed_includes']} model "
                f"includes confirmed by humans the recall lower bound is {_pct(figures['recall_lower_bound'])}, "
                f"which {verdict} the target recall of {_pct(sample['target_recall'], 0)}.")
    recall = figures["recall"]
    if recall is None:
        return (f"A uniform random sample of {figures['sampled']} records (seed {sample['seed']}) held no record "
                "humans included, so recall could not be estimated from it.")
    return (f"In a uniform random sample of {figures['sampled']} of the {sample['population_size']} screened records "
            f"(seed {sample['seed']}), humans included {figures['human_included']}, of which the model included "
            f"{figures['found_by_model']}: recall {_pct(recall['estimate'])} ({level} exact interval "
            f"{_pct(recall['lower'])}–{_pct(recall['upper'])}; one-sided lower bound "
            f"{_pct(figures['recall_lower_bound'])}), which {verdict} the target recall of "
            f"{_pct(sample['target_recall'], 0)}.")


def _second_opinion_sentence(m: dict) -> str:
    second = m.get("second_opinion")
    if not second:
        return ""
    which = {"excluded": "the records the first model excluded", "needs_review": "the records it flagged for review",
             "all": "every record"}[second["apply_to"]]
    rule = {"any_include": "a record was included when either model included it",
            "both_include": "a record was included only when both models included it"}[second["rule"]]
    return f"A second model, {second['model']}, judged {which} against the same criteria; {rule}. "


def methods_text(report: dict) -> str:
    m, p = report["methods"], report["prisma"]
    model = f"the language model {m['model_reported'] or m['model_requested'] + ' (the provider reported no model name)'}"
    if get_backend(m["llm_backend"]).offline:
        model = f"the offline mock backend standing in for {m['model_requested']} (no language model was called)"
    if m["run_started_at"] and m["run_finished_at"]:
        when = f"from {_date(m['run_started_at'])} to {_date(m['run_finished_at'])}"
    else:
        when = "(run dates not recorded)"
    text = (
        f"Titles and abstracts of {p['records']} records were screened with {m['service']} {m['service_version']} "
        f"({m['lane']} lane) using {model}, {when}. Each record was judged against {len(m['inclusion'])} inclusion and "
        f"{len(m['exclusion'])} exclusion criteria with one fixed prompt (SHA-256 {m['prompt_sha256']}); a record "
        f"was included when its score (mean over inclusion criteria of met = 1, unclear = 0.5, not met = 0; 0 "
        f"when an exclusion criterion was met) reached {m['threshold']:g}. {_second_opinion_sentence(m)}"
        f"The run cost US${m['cost_usd']:.2f}. "
        f"{m['reviewers']} human reviewer(s) recorded decisions; they overturned {p['overturned_exclude_to_include']} "
        f"of the model's exclusions and {p['overturned_include_to_exclude']} of its inclusions."
    )
    done = [s for s in report["validation"] if s["figures"] is not None]
    if done:
        text += " " + " ".join(_validation_sentence(s, report["confidence"]) for s in report["validation"])
    else:
        text += " No validation sample has been completed, so recall is not certified."
    return text


def markdown(report: dict) -> str:
    p, m = report["prisma"], report["methods"]
    rows = [
        ("Records screened", p["screened"]), ("Not screened (job unfinished)", p["not_screened"]),
        ("Excluded by automation", p["excluded_by_automation"]),
        ("… of which flagged needs_review", p["excluded_by_automation_flagged"]),
        ("… of which by the cluster filter", p["excluded_by_cluster_filter"]),
        ("Excluded by humans", p["excluded_by_humans"]),
        ("Model inclusions overturned (include → exclude)", p["overturned_include_to_exclude"]),
        ("Model exclusions overturned (exclude → include)", p["overturned_exclude_to_include"]),
        ("Included", p["included"]), ("Awaiting human review", p["awaiting_review"]),
        ("… of which reviewers disagree", p["conflicts"]), ("… of which the model gave no decision", p["errored"]),
    ]
    lines = [f"# Screening report — job {report['job_id']}", "",
             f"Generated {report['generated_at']:%Y-%m-%d %H:%M} UTC.", "",
             "## PRISMA 2020 flow (title/abstract screening)", "", "| | records |", "|---|---:|"]
    lines += [f"| {label} | {value} |" for label, value in rows]
    lines += ["", "## Methods (PRISMA item 8, RAISE)", "", report["methods_text"], "",
              "### Criteria", ""]
    if m["research_question"]:
        lines += [f"Research question: {m['research_question']}", ""]
    lines += [f"- Inclusion {i + 1}: {text}" for i, text in enumerate(m["inclusion"])]
    lines += [f"- Exclusion {i + 1}: {text}" for i, text in enumerate(m["exclusion"])]
    lines += ["", "### Run", "",
              f"- Service: {m['service']} {m['service_version']}, {m['lane']} lane, backend {m['llm_backend']}",
              f"- Model requested: {m['model_requested']}; reported by the provider: {m['model_reported'] or '—'}",
              f"- Run: {m['run_started_at'] or '—'} to {m['run_finished_at'] or '—'} ({m['status']})",
              f"- Prompt SHA-256: `{m['prompt_sha256']}` ({m['prompt_sha256_source']})",
              f"- Threshold: {m['threshold']:g}; cost: US${m['cost_usd']:.6f}; tokens: "
              + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in m["usage"].items()),
              "", "### Validation", ""]
    if not report["validation"]:
        lines.append("No validation sample has been drawn.")
    for sample in report["validation"]:
        state = "complete" if sample["complete"] else f"{sample['progress']['remaining']} to review"
        lines.append(f"- Sample {sample['id']} (from {sample['from']}, {sample['size']} of "
                     f"{sample['population_size']}, seed {sample['seed']}, {state}): "
                     + _validation_sentence(sample, report["confidence"]))
    return "\n".join(lines) + "\n"
