from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from crystallise.formats import item_error
from crystallise.serializers import (
    ItemInSerializer,
    ItemListField,
    JobSerializer,
    LaneInSerializer,
    NumberField,
    StrictSerializer,
    json_text,
)
from screening.models import Decision, ScreeningJob, ScreeningResult
from screening.reviews import review_summary

MAX_PAPERS = 100_000
MAX_CRITERIA = 50
MAX_CRITERION_CHARS = 1_000


class PaperInSerializer(ItemInSerializer):
    """Documentation of one paper (validated in bulk by crystallise.formats)."""

    keywords = serializers.ListField(child=serializers.CharField(), required=False)
    year = serializers.IntegerField(required=False, allow_null=True)
    doi = serializers.CharField(required=False, allow_null=True)


@extend_schema_field(PaperInSerializer(many=True))
class PapersField(ItemListField):
    """A job's papers, as the upload rules normalise them."""

    def item(self, index: int, raw, item: dict) -> dict:
        # PostgreSQL text and jsonb cannot hold NUL (the INSERT would fail with a 500);
        # uploaded files with NUL bytes are refused the same way.
        if "\x00" in item["title"] or "\x00" in item["abstract"] or any("\x00" in k for k in item["keywords"]):
            raise item_error(self.field_name, index, " contains a NUL character; send UTF-8 text without NUL.")
        return super().item(index, raw, item)


class JSONStringMixin:
    """Multipart sends nested objects as JSON strings."""

    def get_value(self, dictionary):
        # Form data: take the raw string (DRF would look for "criteria.inclusion"-style keys).
        if hasattr(dictionary, "getlist") and self.field_name in dictionary:
            return dictionary[self.field_name]
        return super().get_value(dictionary)

    def to_internal_value(self, data):
        if isinstance(data, str):
            data = json_text(data, "Must be a JSON object.")
        return super().to_internal_value(data)


class CriteriaSerializer(JSONStringMixin, StrictSerializer):
    research_question = serializers.CharField(required=False, allow_blank=True, allow_null=True, max_length=2000)
    inclusion = serializers.ListField(
        child=serializers.CharField(max_length=MAX_CRITERION_CHARS, allow_blank=True), required=False, max_length=MAX_CRITERIA,
        default=list,
    )
    exclusion = serializers.ListField(
        child=serializers.CharField(max_length=MAX_CRITERION_CHARS, allow_blank=True), required=False, max_length=MAX_CRITERIA,
        default=list,
    )

    def validate(self, attrs):
        attrs["inclusion"] = [c.strip() for c in attrs.get("inclusion", []) if c.strip()]
        attrs["exclusion"] = [c.strip() for c in attrs.get("exclusion", []) if c.strip()]
        if not attrs["inclusion"] and not attrs["exclusion"]:
            raise serializers.ValidationError({"inclusion": ["Give at least one inclusion or exclusion criterion."]})
        attrs["research_question"] = (attrs.get("research_question") or "").strip()
        return attrs


class ClustersInSerializer(JSONStringMixin, StrictSerializer):
    by = serializers.ChoiceField(choices=["topic", "study_design", "none"], default="none")
    count = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=100)
    include = serializers.ListField(child=serializers.CharField(max_length=200), required=False, allow_null=True, allow_empty=False)

    def validate(self, attrs):
        # Study-design (and `none`) labels are fixed: a label outside them would silently exclude every paper.
        # Topic labels come from the papers themselves, so they cannot be checked before clustering.
        from screening.clustering import ALL_LABEL, DESIGN_LABELS

        known = {"study_design": DESIGN_LABELS, "none": (ALL_LABEL,)}.get(attrs.get("by", "none"))
        if known is not None and attrs.get("include"):
            unknown = [label for label in attrs["include"] if label.casefold() not in known]
            if unknown:
                raise serializers.ValidationError(
                    {"include": [f"Unknown label {unknown[0]!r} for by={attrs.get('by', 'none')!r}: "
                                 f"use {', '.join(known)}."]})
        return attrs


class SecondOpinionInSerializer(JSONStringMixin, StrictSerializer):
    model = serializers.CharField(max_length=64)
    apply_to = serializers.ChoiceField(choices=["excluded", "needs_review", "all"], default="excluded")
    rule = serializers.ChoiceField(choices=["any_include", "both_include"], default="any_include")

    def validate_model(self, value):
        from crystallise.config import validate_model
        from crystallise.errors import ValidationError

        try:
            return validate_model(value)
        except ValidationError as exc:
            raise serializers.ValidationError(exc.detail) from None

    def validate(self, attrs):
        if attrs.get("apply_to", "excluded") == "excluded" and attrs.get("rule", "any_include") == "both_include":
            raise serializers.ValidationError({"rule": [
                "both_include needs the second model's view of included papers: with apply_to 'excluded' it could "
                "never change a decision. Use apply_to 'all' or 'needs_review', or rule 'any_include'."]})
        return attrs


class ScreeningJobCreateSerializer(StrictSerializer, LaneInSerializer):
    project_id = serializers.CharField(required=False, allow_null=True, allow_blank=True, max_length=200)
    model = serializers.CharField(required=False, default="gpt-5-nano", max_length=64)
    criteria = CriteriaSerializer()
    papers = PapersField(required=False, max_items=MAX_PAPERS)
    papers_file = serializers.FileField(required=False, help_text="RIS, CSV, PubMed/MEDLINE or JSONL file (multipart).")
    threshold = NumberField(required=False, default=1.0, min_value=0.0, max_value=1.0)
    clusters = ClustersInSerializer(required=False)
    max_estimated_cost_usd = serializers.DecimalField(
        required=False, allow_null=True, max_digits=16, decimal_places=8, min_value=0, coerce_to_string=False
    )
    callback_url = serializers.URLField(required=False, allow_null=True, max_length=2000)
    second_opinion = SecondOpinionInSerializer(required=False, allow_null=True)

    def validate_callback_url(self, value):
        from crystallise.callbacks import check_url

        if value and (problem := check_url(value)) is not None:
            raise serializers.ValidationError(problem)
        return value

    exclusive = ("papers", "papers_file")


class ClusterOutSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    label = serializers.CharField()
    size = serializers.IntegerField()
    screened = serializers.IntegerField()
    included = serializers.IntegerField()


class CriterionOutSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=["inclusion", "exclusion"])
    index = serializers.IntegerField()
    text = serializers.CharField()
    verdict = serializers.ChoiceField(choices=["met", "not_met", "unclear"])
    reasoning = serializers.CharField()


class ScreeningResultSerializer(serializers.ModelSerializer):
    paper_id = serializers.CharField(source="paper.paper_id")
    title = serializers.CharField(source="paper.title")
    criteria = CriterionOutSerializer(many=True)
    # Human review (screening.reviews): read from the `review` selected by listing().
    human_decision = serializers.SerializerMethodField()
    conflict = serializers.SerializerMethodField()
    final_decision = serializers.SerializerMethodField()

    class Meta:
        model = ScreeningResult
        fields = ["paper_id", "title", "cluster", "decision", "score", "needs_review", "confidence",
                  "reasoning", "criteria", "error", "llm_backend", "opinions", "human_decision", "conflict",
                  "final_decision"]

    @extend_schema_field(serializers.ChoiceField(choices=Decision.choices, allow_null=True))
    def get_human_decision(self, result: ScreeningResult):
        return review_summary(result)["human_decision"]

    @extend_schema_field(serializers.BooleanField())
    def get_conflict(self, result: ScreeningResult) -> bool:
        return review_summary(result)["conflict"]

    @extend_schema_field(serializers.ChoiceField(choices=Decision.choices, allow_null=True))
    def get_final_decision(self, result: ScreeningResult):
        return review_summary(result)["final_decision"]


class ProgressSerializer(serializers.Serializer):
    total = serializers.IntegerField()
    screened = serializers.IntegerField()
    included = serializers.IntegerField()
    excluded = serializers.IntegerField()
    errored = serializers.IntegerField()


INLINE_RESULTS_LIMIT = 1000


class ScreeningJobSerializer(JobSerializer):
    """A job as clients see it, built on every poll: fields are declared (not
    introspected from the model) and used without per-instance copies."""

    RESULTS_ROUTE = "screening-job-results"

    project_id = serializers.CharField(allow_null=True, read_only=True)
    criteria = serializers.JSONField(read_only=True)
    threshold = serializers.FloatField(read_only=True)
    clusters_config = serializers.JSONField(read_only=True)
    callback_url = serializers.CharField(allow_null=True, read_only=True)
    callback_status = serializers.CharField(allow_null=True, read_only=True)
    callback_error = serializers.CharField(allow_null=True, read_only=True)
    second_opinion = serializers.JSONField(read_only=True, allow_null=True)
    usage_by_model = serializers.SerializerMethodField()
    progress = serializers.SerializerMethodField()
    clusters = serializers.SerializerMethodField()
    results = serializers.SerializerMethodField()

    @extend_schema_field(serializers.DictField(child=serializers.DictField()))
    def get_usage_by_model(self, job: ScreeningJob) -> dict:
        """Tokens and cost per model; one entry (the job's counters) when only the job's model answered."""
        if job.usage_by_model:
            return job.usage_by_model
        return {job.model: {**job.usage_dict(), "cost_usd": float(job.cost_usd)}}

    @extend_schema_field(ProgressSerializer)
    def get_progress(self, job: ScreeningJob) -> dict:
        return {"total": job.total, "screened": job.screened, "included": job.included,
                "excluded": job.excluded, "errored": job.errored}

    @extend_schema_field(ClusterOutSerializer(many=True, allow_null=True))
    def get_clusters(self, job: ScreeningJob):
        return job.clusters

    @extend_schema_field(ScreeningResultSerializer(many=True, allow_null=True))
    def get_results(self, job: ScreeningJob):
        if not self.context.get("inline_results") or job.total > INLINE_RESULTS_LIMIT:
            return None
        rows = ScreeningResult.objects.filter(job=job).listing().order_by("position")
        return ScreeningResultSerializer(rows, many=True).data
