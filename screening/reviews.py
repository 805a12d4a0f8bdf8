"""Human reviews of screening results: validated all or nothing, recorded append-only, summed up per result.

A review is one reviewer's decision (include/exclude) on one paper. Each is
stored as a `HumanReview` row that is never changed; the latest decision of
each reviewer lives in the result's `ReviewState`, which also holds what the
reviewers add up to (`human_decision` when they agree, else `conflict`).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator

from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from crystallise.auth import Caller
from crystallise.errors import NotFoundError, PayloadTooLarge, ValidationError
from crystallise.formats import decode_text
from crystallise.formats.csvfile import delimiter, normalise_header
from screening.models import HumanReview, Paper, ReviewState, ScreeningJob, ScreeningResult

MAX_REVIEWS = 10_000
MAX_REVIEWER_CHARS = 100
MAX_NOTE_CHARS = 2_000
MAX_LISTED = 20
BATCH = 2_000
FILE_FIELD = "reviews_file"
FILE_COLUMNS = ("paper_id", "decision", "reviewer", "note")
# What a file's decision cells may say (case-insensitive); JSON bodies say include or exclude.
FILE_DECISIONS = {"include": "include", "exclude": "exclude", "1": "include", "0": "exclude",
                  "yes": "include", "no": "exclude", "true": "include", "false": "exclude"}


def _text(value, *, name: str, where: str, required: bool, limit: int) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise ValidationError(f"{where}.{name} must be a string.", errors={f"{where}.{name}": ["Must be a string."]})
    value = value.strip()
    if required and not value:
        raise ValidationError(f"{where}.{name} is required.", errors={f"{where}.{name}": ["This field is required."]})
    if len(value) > limit:
        raise ValidationError(f"{where}.{name} is longer than {limit} characters.",
                              errors={f"{where}.{name}": [f"At most {limit} characters."]})
    if "\x00" in value:
        raise ValidationError(f"{where}.{name} contains a NUL character.",
                              errors={f"{where}.{name}": ["Contains a NUL character."]})
    return value


def _review(raw: dict, *, where: str, decisions: dict[str, str]) -> dict:
    paper_id = raw.get("paper_id")
    if isinstance(paper_id, int) and not isinstance(paper_id, bool):
        paper_id = str(paper_id)
    decision = raw.get("decision")
    key = decision.strip().lower() if isinstance(decision, str) else decision
    if not isinstance(key, str) or key not in decisions:
        allowed = ", ".join(sorted(set(decisions)))
        raise ValidationError(f"{where}.decision must be one of {allowed}, not {decision!r}.",
                              errors={f"{where}.decision": [f"One of {allowed}."]})
    return {
        "paper_id": _text(paper_id, name="paper_id", where=where, required=True, limit=500),
        "decision": decisions[key],
        "reviewer": _text(raw.get("reviewer"), name="reviewer", where=where, required=True, limit=MAX_REVIEWER_CHARS),
        "note": _text(raw.get("note"), name="note", where=where, required=False, limit=MAX_NOTE_CHARS),
        "where": where,
    }


def parse_json_reviews(items) -> list[dict]:
    """`reviews` of a JSON body: a list of {paper_id, decision, reviewer, note?}, decision include or exclude."""
    if not isinstance(items, list):
        raise ValidationError("reviews must be a list.", errors={"reviews": ["Must be a list of reviews."]})
    if not items:
        raise ValidationError("reviews is empty.", errors={"reviews": ["At least one review is required."]})
    if len(items) > MAX_REVIEWS:
        raise ValidationError(f"At most {MAX_REVIEWS} reviews per call (got {len(items)}).",
                              errors={"reviews": [f"At most {MAX_REVIEWS} per call."]})
    out = []
    strict = {"include": "include", "exclude": "exclude"}
    for index, item in enumerate(items):
        where = f"reviews[{index}]"
        if not isinstance(item, dict):
            raise ValidationError(f"{where} must be an object.", errors={where: ["Must be an object."]})
        unknown = sorted(set(item) - set(FILE_COLUMNS))
        if unknown:
            raise ValidationError(f"{where}.{unknown[0]}: unknown field.",
                                  errors={f"{where}.{name}": ["Unknown field."] for name in unknown})
        out.append(_review(item, where=where, decisions=strict))
    return out


def parse_review_file(upload, *, max_bytes: int) -> list[dict]:
    """A CSV of reviews (columns paper_id, decision, reviewer, note; decision also 1/0, yes/no, true/false)."""
    if upload.size > max_bytes:
        raise PayloadTooLarge(f"{FILE_FIELD} is larger than the upload limit.", errors={FILE_FIELD: ["File too large."]})
    text = decode_text(upload.read(), field=FILE_FIELD)
    # newline="": quoted notes may span lines.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter(text), strict=True)
    try:
        header = [normalise_header(name) for name in next(reader, [])]
        header = ["paper_id" if name == "id" and "paper_id" not in header else name for name in header]
        missing = [name for name in FILE_COLUMNS[:3] if name not in header]
        if missing:
            raise ValidationError(f"{FILE_FIELD}: the CSV header lacks {', '.join(missing)} (columns: "
                                  f"{', '.join(FILE_COLUMNS)}).", errors={FILE_FIELD: [f"Missing column {missing[0]}."]})
        columns = {name: header.index(name) for name in FILE_COLUMNS if name in header}
        out = []
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if len(out) >= MAX_REVIEWS:
                raise ValidationError(f"At most {MAX_REVIEWS} reviews per call.",
                                      errors={FILE_FIELD: [f"More than {MAX_REVIEWS} rows."]})
            where = f"{FILE_FIELD} line {reader.line_num}"
            cells = {name: row[index] if index < len(row) else None for name, index in columns.items()}
            out.append(_review(cells, where=where, decisions=FILE_DECISIONS))
    except csv.Error as exc:
        raise ValidationError(f"{FILE_FIELD} line {reader.line_num}: {exc}.", errors={FILE_FIELD: [str(exc)]}) from None
    if not out:
        raise ValidationError(f"{FILE_FIELD} has no reviews.", errors={FILE_FIELD: ["No data rows."]})
    return out


def _chunks(values: list, size: int = BATCH) -> Iterator[list]:
    for start in range(0, len(values), size):
        yield values[start:start + size]


def _refuse(problems: list[str], detail: str) -> None:
    if problems:
        listed = problems[:MAX_LISTED] + ([f"... and {len(problems) - MAX_LISTED} more"]
                                          if len(problems) > MAX_LISTED else [])
        raise ValidationError(f"{len(problems)} {detail}: {problems[0]}" + (" ..." if len(problems) > 1 else ""),
                              errors={"reviews": listed})


def _resolve(job: ScreeningJob, reviews: list[dict]) -> dict[str, int | None]:
    """paper_id → result id (None for a paper not screened yet); unknown ids are refused, naming them."""
    wanted = list({review["paper_id"] for review in reviews})
    found: dict[str, int | None] = {}
    for chunk in _chunks(wanted):
        rows = Paper.objects.filter(job=job, paper_id__in=chunk).values_list("paper_id", "result__id")
        found.update(rows)
    seen: dict[tuple[str, str], str] = {}
    duplicates = []
    for review in reviews:
        key = (review["paper_id"], review["reviewer"])
        if key in seen:
            duplicates.append(f"{review['where']}: paper {key[0]!r} by {key[1]!r} again (first at {seen[key]})")
        seen.setdefault(key, review["where"])
    _refuse([f"{r['where']}: {r['paper_id']!r}" for r in reviews if r["paper_id"] not in found],
            "reviews name papers that are not in this job")
    _refuse([f"{r['where']}: {r['paper_id']!r}" for r in reviews if found[r["paper_id"]] is None],
            "reviews name papers that have no screening result yet")
    _refuse(duplicates, "reviews repeat a paper and reviewer within this call")
    return found


def reviews_record(*, job: ScreeningJob, caller: Caller, reviews: list[dict]) -> tuple[int, int]:
    """Record validated reviews all or nothing. Returns (recorded, unchanged).

    A review equal to its reviewer's latest decision and note on that paper is not stored again.
    The results' review states are locked in one order (by result) while they change, so two
    calls reviewing the same papers cannot lose each other's decisions.
    """
    results = _resolve(job, reviews)
    ids = sorted({results[review["paper_id"]] for review in reviews})
    try:
        return _record(job, caller, reviews, results, ids)
    except IntegrityError:
        # The job (and its results) was deleted between the checks and the writes: nothing was stored.
        if ScreeningJob.objects.filter(pk=job.pk).exists():
            raise
        raise NotFoundError("Screening job not found: it was deleted while the reviews were being recorded; "
                            "nothing was stored.") from None


def _record(job: ScreeningJob, caller: Caller, reviews: list[dict], results: dict, ids: list) -> tuple[int, int]:
    recorded: list[HumanReview] = []
    with transaction.atomic():
        # Locked against a DELETE of the job (screening.services.job_delete locks it too).
        if not ScreeningJob.objects.select_for_update().filter(pk=job.pk).exists():
            raise NotFoundError("Screening job not found: it was deleted while the reviews were being recorded; "
                                "nothing was stored.")
        for chunk in _chunks(ids):
            ReviewState.objects.bulk_create([ReviewState(job=job, result_id=rid) for rid in chunk],
                                            ignore_conflicts=True)
        states = {}
        for chunk in _chunks(ids):
            states.update((s.result_id, s) for s in
                          ReviewState.objects.select_for_update().filter(result_id__in=chunk).order_by("result_id"))
        changed, now = set(), timezone.now()
        for review in reviews:
            state = states[results[review["paper_id"]]]
            latest = state.reviewers.get(review["reviewer"])
            if latest == {"decision": review["decision"], "note": review["note"]}:
                continue
            recorded.append(HumanReview(
                job=job, result_id=state.result_id, reviewer=review["reviewer"], decision=review["decision"],
                previous_decision=latest["decision"] if latest else None, note=review["note"],
                api_key_id=caller.api_key_id, api_key_label=caller.label))
            state.reviewers[review["reviewer"]] = {"decision": review["decision"], "note": review["note"]}
            state.settle()
            state.updated_at = now
            changed.add(state.result_id)
        HumanReview.objects.bulk_create(recorded, batch_size=BATCH)
        _save_states([states[rid] for rid in sorted(changed)], now)
    return len(recorded), len(reviews) - len(recorded)


def _save_states(states: list[ReviewState], now) -> None:
    """One UPDATE per distinct new state: a file of labels gives a handful of distinct states for
    thousands of papers (bulk_update's per-row CASE took seconds at 10,000 rows)."""
    groups: dict[str, list[ReviewState]] = {}
    for state in states:
        groups.setdefault(json.dumps(state.reviewers, sort_keys=True), []).append(state)
    for members in groups.values():
        first = members[0]
        for chunk in _chunks([state.pk for state in members]):
            ReviewState.objects.filter(pk__in=chunk).update(
                reviewers=first.reviewers, human_decision=first.human_decision, conflict=first.conflict, updated_at=now)


# --- reading -----------------------------------------------------------------------------

BOOLEANS = {"true": True, "1": True, "false": False, "0": False}


def _boolean(params, name: str) -> bool | None:
    raw = params.get(name)
    if raw is None:
        return None
    if raw.lower() not in BOOLEANS:
        raise ValidationError(f"{name} must be true or false.", errors={name: ["Must be a boolean."]})
    return BOOLEANS[raw.lower()]


def filter_results(rows: QuerySet, params) -> QuerySet:
    """Results filtered by `reviewed`, `conflict` and `final_decision` (query parameters)."""
    if (reviewed := _boolean(params, "reviewed")) is not None:
        rows = rows.filter(review__isnull=not reviewed)
    if (conflict := _boolean(params, "conflict")) is not None:
        rows = rows.filter(review__conflict=True) if conflict else rows.filter(
            Q(review__isnull=True) | Q(review__conflict=False))
    if (final := params.get("final_decision")) is not None:
        if final not in ("include", "exclude"):
            raise ValidationError("final_decision must be include or exclude.",
                                  errors={"final_decision": ["Invalid choice."]})
        rows = rows.filter(Q(review__human_decision=final)
                           | Q(review__human_decision__isnull=True, decision=final))
    return rows


def review_summary(result: ScreeningResult) -> dict:
    """human_decision, conflict and final_decision of a result (its `review` selected with it, or absent)."""
    state = getattr(result, "review", None)
    human = state.human_decision if state is not None else None
    return {"human_decision": human, "conflict": bool(state is not None and state.conflict),
            "final_decision": human or result.decision}


def review_columns(row: dict) -> dict:
    """The same three values for an export row read with `values()` (review__human_decision, review__conflict)."""
    human = row.get("review__human_decision")
    return {"human_decision": human, "conflict": bool(row.get("review__conflict")),
            "final_decision": human or row.get("decision")}


def history(job: ScreeningJob, paper_id: str) -> tuple[ScreeningResult | None, QuerySet]:
    """A paper's result (None when it has none yet) and its reviews, oldest first."""
    result = ScreeningResult.objects.filter(job=job, paper__paper_id=paper_id).select_related("paper", "review").first()
    return result, HumanReview.objects.filter(result=result).order_by("id") if result else HumanReview.objects.none()
