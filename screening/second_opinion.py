"""A second model's opinion on some of a job's papers, and the rule that turns two opinions into one decision.

`second_opinion: {"model", "apply_to", "rule"}` on a screening job: after the
job's model answers a paper, the second model answers the same criteria for
the papers `apply_to` selects (`excluded`: the first model excluded it;
`needs_review`: the first answer was flagged; `all`), in the same job, client
and lane. The final decision follows `rule`:

- `any_include`: include when either model includes (recall first: a second
  model can only rescue exclusions);
- `both_include`: include only when both include (precision first: the second
  model must confirm the first one's inclusions).

A paper the second model could not answer (an error after all retries) keeps
the first model's decision and is flagged `needs_review`. The result's score,
confidence, reasoning and per-criterion verdicts stay the first model's; both
opinions are kept in `opinions`.
"""

from __future__ import annotations

from dataclasses import dataclass

from crystallise.config import model_capabilities
from crystallise.errors import Category, LLMError
from crystallise.jobs.runner import Outcome
from crystallise.llm.base import CallOptions
from crystallise.tokens import Usage

APPLY_TO = ("excluded", "needs_review", "all")
RULES = ("any_include", "both_include")


def decide(first: str, second: str | None, rule: str) -> str:
    """The final decision of a paper the second model was asked about (`second` None: it gave no answer)."""
    if second is None:
        return first
    if rule == "any_include":
        return "include" if "include" in (first, second) else "exclude"
    return "include" if first == second == "include" else "exclude"


def selects(apply_to: str, *, decision: str, needs_review: bool) -> bool:
    """Whether the first model's answer goes to the second model."""
    if apply_to == "all":
        return True
    if apply_to == "excluded":
        return decision == "exclude"
    return needs_review


def opinion(model: str, row) -> dict:
    """One model's opinion as a result shows it."""
    return {"model": model, "decision": row.decision, "score": row.score, "confidence": row.confidence,
            "criteria": [{"kind": c["kind"], "index": c["index"], "verdict": c["verdict"]} for c in row.criteria]}


@dataclass
class SecondOpinion:
    """The second pass of one job's run (built by `ScreeningKind.prepare`)."""

    model: str
    apply_to: str
    rule: str
    first_model: str
    options: CallOptions

    @classmethod
    def for_job(cls, job, options: CallOptions) -> SecondOpinion | None:
        config = job.second_opinion
        if not config:
            return None
        model = config["model"]
        return cls(
            model=model, apply_to=config["apply_to"], rule=config["rule"], first_model=job.model,
            options=CallOptions(
                model=model, schema=options.schema, max_output_tokens=options.max_output_tokens,
                reasoning_effort="minimal" if model_capabilities[model].reasoning else None,
                cache_key=f"{options.cache_key}-second",
            ),
        )

    async def review(self, kind, client, job, messages: list[dict], outcome: Outcome) -> Outcome:
        """Ask the second model about the paper of `outcome` if `apply_to` selects it; the outcome with the rule applied."""
        row = outcome.row
        outcome.usage_by_model = {self.first_model: outcome.usage}
        if not selects(self.apply_to, decision=row.decision, needs_review=row.needs_review):
            return outcome
        first = opinion(self.first_model, row)
        try:
            answer = await client.complete(messages, self.options)
        except LLMError as exc:
            usage = getattr(exc, "usage", None) or Usage()
            row.opinions = [first, {"model": self.model, "decision": None, "error": exc.detail}]
            row.needs_review = True
            outcome.usage_by_model[self.model] = usage
            outcome.usage = outcome.usage + usage
            if exc.category == Category.AUTH:
                outcome.fatal = True
                outcome.error_category, outcome.error_message = exc.category, exc.detail
            return outcome
        second_row = type(row)(criteria=[])
        kind.fill(second_row, answer.parsed, job)
        second = opinion(self.model, second_row)
        row.opinions = [first, second]
        if second_row.decision != row.decision:
            row.needs_review = True  # the two models disagree on this paper
        final = decide(row.decision, second_row.decision, self.rule)
        if final != row.decision:
            row.decision = final
            outcome.counters = {"screened": 1, "included": int(final == "include"), "excluded": int(final != "include")}
        outcome.usage_by_model[self.model] = answer.usage
        outcome.usage = outcome.usage + answer.usage
        row.input_tokens += answer.usage.input_tokens
        row.cached_input_tokens += answer.usage.cached_input_tokens
        row.output_tokens += answer.usage.output_tokens
        return outcome


def add_usage_by_model(current: dict, job, outcomes: list[Outcome]) -> dict:
    """`current` (the job's usage_by_model) plus what `outcomes` used, per model, with each model's cost."""
    from crystallise.llm.backends import get_backend

    totals = {model: dict(entry) for model, entry in (current or {}).items()}
    backend = get_backend(job.llm_backend)
    for outcome in outcomes:
        for model, usage in (outcome.usage_by_model or {job.model: outcome.usage}).items():
            entry = totals.setdefault(model, {**Usage().as_dict(), "cost_usd": 0.0})
            for name, value in usage.as_dict().items():
                entry[name] = entry.get(name, 0) + value
            entry["cost_usd"] = round(float(entry["cost_usd"]) + float(backend.cost(model, usage)), 8)
    return totals


def add_second_opinion_arguments(parser) -> None:
    """`--second-opinion MODEL [--apply-to …] [--rule …]` for the commands that screen."""
    parser.add_argument("--second-opinion", metavar="MODEL", default=None,
                        help="A second model's opinion on some papers (see --apply-to, --rule).")
    parser.add_argument("--apply-to", choices=APPLY_TO, default="excluded",
                        help="Which papers the second model answers (default: excluded).")
    parser.add_argument("--rule", choices=RULES, default="any_include",
                        help="How two opinions make the decision (default: any_include).")


def second_opinion_argument(options: dict) -> dict | None:
    """The API's `second_opinion` field from the command line's options."""
    if not options.get("second_opinion"):
        return None
    return {"model": options["second_opinion"], "apply_to": options["apply_to"], "rule": options["rule"]}
