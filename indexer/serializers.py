from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from crystallise.formats import item_error
from crystallise.serializers import (
    CostField,
    ItemInSerializer,
    ItemListField,
    JobSerializer,
    LaneInSerializer,
    StrictSerializer,
    UsageSerializer,
    json_text,
)
from indexer.models import IndexJob, IndexResult
from indexer.precheck import Status
from indexer.prompts import FIELDS

MAX_SYNC_RECORDS = 100
MAX_JOB_RECORDS = 100_000


class RecordInSerializer(ItemInSerializer):
    """Documentation of one record (validated in bulk by crystallise.formats)."""


@extend_schema_field(RecordInSerializer(many=True))
class RecordsField(ItemListField):
    """Records with their abstract as sent: None when absent or null (missing_abstract), cleaned later."""

    noun = "record"

    def item(self, index: int, raw, item: dict) -> dict:
        abstract = raw.get("abstract") if isinstance(raw, dict) else None
        if abstract is not None and not isinstance(abstract, str):
            raise item_error(self.field_name, index, ".abstract must be a string or null.")
        self.check_lengths(index, item["title"], abstract)
        return {"id": item["id"], "title": item["title"], "abstract": abstract}


class FieldsField(serializers.ListField):
    def __init__(self, **kwargs):
        super().__init__(child=serializers.ChoiceField(choices=list(FIELDS)), allow_empty=False, required=False,
                         default=list(FIELDS), **kwargs)

    def to_internal_value(self, data):
        # Multipart sends "population,outcomes" (one value or repeated) or a JSON list.
        if isinstance(data, str):
            data = [data]
        if isinstance(data, list) and len(data) == 1 and isinstance(data[0], str) and data[0].strip().startswith("["):
            data = json_text(data[0], "Must be a list of field names.")
        if isinstance(data, list) and all(isinstance(f, str) for f in data):
            data = [part.strip() for f in data for part in f.split(",") if part.strip()]
        wanted = set(super().to_internal_value(data))
        return [name for name in FIELDS if name in wanted]


class _CommonIn(StrictSerializer):
    model = serializers.CharField(required=False, default="gpt-5-nano", max_length=64)
    fields = FieldsField()
    max_estimated_cost_usd = serializers.DecimalField(
        required=False, allow_null=True, max_digits=16, decimal_places=8, min_value=0, coerce_to_string=False
    )


class IndexRunInSerializer(_CommonIn):
    records = RecordsField(
        max_items=MAX_SYNC_RECORDS,
        too_many="At most {limit} records per synchronous call (got {got}). For larger batches use "
                 "POST /v1/indexer/jobs, or `python manage.py index_records FILE` from the shell.",
    )


class IndexJobCreateSerializer(_CommonIn, LaneInSerializer):
    records = RecordsField(required=False, max_items=MAX_JOB_RECORDS)
    records_file = serializers.FileField(required=False, help_text="CSV, RIS or JSONL file (multipart).")

    exclusive = ("records", "records_file")


class RecordOutSerializer(serializers.Serializer):
    id = serializers.CharField()
    indexing_status = serializers.ChoiceField(choices=list(Status.ALL))
    extraction_error = serializers.CharField(allow_null=True)
    fields = serializers.JSONField(allow_null=True)


class RecordErrorSerializer(serializers.Serializer):
    id = serializers.CharField()
    indexing_status = serializers.ChoiceField(choices=list(Status.ALL))
    extraction_error = serializers.CharField(allow_null=True)


class IndexRunOutSerializer(serializers.Serializer):
    records = RecordOutSerializer(many=True)
    errors = RecordErrorSerializer(many=True)
    usage = UsageSerializer()
    cost_usd = CostField()
    llm_backend = serializers.CharField()


class IndexResultSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="record.record_id")
    title = serializers.CharField(source="record.title")

    class Meta:
        model = IndexResult
        fields = ["id", "title", "indexing_status", "extraction_error", "fields", "error_category", "llm_backend"]


class IndexProgressSerializer(serializers.Serializer):
    total = serializers.IntegerField()
    processed = serializers.IntegerField()
    ok = serializers.IntegerField()
    errored = serializers.IntegerField()


class IndexJobSerializer(JobSerializer):
    """An index job as clients see it (built on every poll; see ReadOnlySerializer)."""

    RESULTS_ROUTE = "indexer-job-results"

    fields = serializers.ListField(child=serializers.ChoiceField(choices=list(FIELDS)), read_only=True)
    progress = serializers.SerializerMethodField()

    @extend_schema_field(IndexProgressSerializer)
    def get_progress(self, job: IndexJob) -> dict:
        return {"total": job.total, "processed": job.processed, "ok": job.ok, "errored": job.errored}
