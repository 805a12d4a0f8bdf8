"""Serializer building blocks shared by the apps."""

from __future__ import annotations

import json

from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from crystallise.errors import ValidationError
from crystallise.formats import MAX_ABSTRACT_CHARS, MAX_TITLE_CHARS, item_error, normalize_papers
from crystallise.jobs.models import JobStatus


class StrictSerializer(serializers.Serializer):
    """Rejects unknown fields (a typo must not silently change a job).

    `exclusive`: two fields that are alternatives (inline data, or a file); sending both is
    refused before either is validated, so the error says so rather than what is wrong with one.
    """

    exclusive: tuple[str, str] | None = None

    def to_internal_value(self, data):
        if hasattr(data, "keys"):
            unknown = sorted(set(data.keys()) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
            if self.exclusive and all(name in data for name in self.exclusive):
                first, second = self.exclusive
                raise serializers.ValidationError({first: [f"Send {first} or {second}, not both."]})
        return super().to_internal_value(data)

    def validate(self, attrs):
        # One of the `exclusive` alternatives is required. (The class docstring is not the place
        # to say so: drf-spectacular shows it as the description of every subclass without one.)
        if self.exclusive and not any(name in attrs for name in self.exclusive):
            first, second = self.exclusive
            raise serializers.ValidationError({first: [f"This field is required (or upload {second})."]})
        return attrs


def json_text(text: str, message: str):
    """`text` decoded as JSON (multipart sends lists and objects as JSON strings), or `message` as a field error."""
    try:
        return json.loads(text)
    except ValueError:
        raise serializers.ValidationError(message) from None


class ItemInSerializer(serializers.Serializer):
    """Documentation of one paper or record of an `ItemListField` (which validates them in bulk)."""

    id = serializers.CharField(max_length=255)
    title = serializers.CharField(required=False, allow_blank=True, max_length=MAX_TITLE_CHARS)
    abstract = serializers.CharField(required=False, allow_blank=True, allow_null=True, max_length=MAX_ABSTRACT_CHARS)


class ItemListField(serializers.Field):
    """A JSON list of papers or records, validated in one fast pass (100,000 items must not take a
    DRF field per value), with the rules of uploaded files (`crystallise.formats`).

    The list may come as a JSON string (multipart). An empty list, or one longer than `max_items`,
    is refused whole (`too_many` is formatted with `limit`, `got` and `noun`); a problem with one
    item is keyed by the item (`papers[3]`). `item()` turns each raw item and its normalised form
    into what the service receives; by default the normalised form, once its lengths are checked.
    """

    noun = "paper"

    def __init__(self, *, max_items: int, too_many: str = "At most {limit} {noun}s per job (got {got}).", **kwargs):
        self.max_items = max_items
        self.too_many = too_many
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if isinstance(data, str):
            data = json_text(data, f"Must be a JSON array of {self.noun}s.")
        if not isinstance(data, list):
            raise serializers.ValidationError(f"Must be a list of {self.noun}s.")
        if not data:
            raise serializers.ValidationError(f"At least one {self.noun} is required.")
        if len(data) > self.max_items:
            raise serializers.ValidationError(self.too_many.format(limit=self.max_items, got=len(data), noun=self.noun))
        items = normalize_papers(data, max_records=self.max_items, field=self.field_name)
        return [self.item(index, raw, item) for index, (raw, item) in enumerate(zip(data, items, strict=True))]

    def item(self, index: int, raw, item: dict) -> dict:
        self.check_lengths(index, item["title"], item["abstract"])
        return item

    def check_lengths(self, index: int, title: str, abstract: str | None) -> None:
        if len(title) > MAX_TITLE_CHARS:
            raise item_error(self.field_name, index, f".title is longer than {MAX_TITLE_CHARS} characters.")
        if abstract is not None and len(abstract) > MAX_ABSTRACT_CHARS:
            raise item_error(self.field_name, index, f".abstract is longer than {MAX_ABSTRACT_CHARS} characters.")


class UsageSerializer(serializers.Serializer):
    input_tokens = serializers.IntegerField()
    cached_input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    reasoning_tokens = serializers.IntegerField()


class CostField(serializers.DecimalField):
    """USD amounts as JSON numbers."""

    def __init__(self, **kwargs):
        kwargs.setdefault("max_digits", 16)
        kwargs.setdefault("decimal_places", 8)
        kwargs.setdefault("coerce_to_string", False)
        super().__init__(**kwargs)

    def to_representation(self, value):
        return None if value is None else float(value)


class NumberField(serializers.FloatField):
    """A finite JSON number (or numeric string from a form); `true`/`false` are not numbers here."""

    default_error_messages = {"invalid": "A valid number is required."}

    def to_internal_value(self, data):
        if isinstance(data, bool):
            self.fail("invalid")
        return super().to_internal_value(data)


class ReadOnlySerializer(serializers.Serializer):
    """An output-only serializer that formats with its declared fields without copying them.

    DRF deep-copies every declared field for each serializer instance before
    formatting anything; for a job polled every second that copy was most of
    the serialisation CPU. Here the declared fields (which also document the
    OpenAPI schema) are used as formatters once per class: plain fields read
    `instance.<source>` and format with their own `to_representation`, method
    fields call `get_<name>`, exactly as `Serializer.to_representation` would
    (tests compare the two)."""

    def to_representation(self, instance):
        out = {}
        for name, source, method, formatter in self._read_plan():
            if method is not None:
                out[name] = getattr(self, method)(instance)
                continue
            value = getattr(instance, source)
            out[name] = None if value is None else formatter(value)
        return out

    @classmethod
    def _read_plan(cls) -> list[tuple]:
        plan = cls.__dict__.get("_plan")
        if plan is None:
            plan = []
            for name, field in cls._declared_fields.items():
                if isinstance(field, serializers.SerializerMethodField):
                    plan.append((name, None, field.method_name or f"get_{name}", None))
                else:
                    source = field.source or name
                    if "." in source or source == "*":
                        raise TypeError(f"{cls.__name__}.{name}: ReadOnlySerializer reads plain attributes only")
                    plan.append((name, source, None, field.to_representation))
            cls._plan = plan
        return plan


class LaneInSerializer(serializers.Serializer):
    """How a new job's items reach the provider (docs/api-reference.md#lanes); mixed into the create serializers."""

    mode = serializers.ChoiceField(choices=["online", "batch"], default="online",
                                   help_text="online: one call per item now; batch: the Batch API, at half price, "
                                   "within 24 hours.")
    fallback = serializers.ChoiceField(choices=["none", "online"], default="none",
                                       help_text="Batch jobs: where items the batches could not answer go.")
    service_tier = serializers.ChoiceField(choices=["default", "flex"], default="default",
                                           help_text="Online jobs: 'flex' bills at half price and may be slower.")


class BatchOutSerializer(serializers.Serializer):
    id = serializers.CharField(allow_null=True)
    status = serializers.CharField()
    round = serializers.IntegerField()
    request_counts = serializers.DictField(child=serializers.IntegerField())
    error = serializers.CharField(allow_null=True)


class JobSerializer(ReadOnlySerializer):
    """What every kind of job shows (the fields of `BaseJob`); an app adds its own and `RESULTS_ROUTE`."""

    RESULTS_ROUTE = ""  # URL name of the job's results

    id = serializers.UUIDField(read_only=True)
    status = serializers.ChoiceField(choices=[s.value for s in JobStatus], read_only=True)
    model = serializers.CharField(read_only=True)
    llm_backend = serializers.CharField(read_only=True)
    error_category = serializers.CharField(allow_null=True, read_only=True)
    error_message = serializers.CharField(allow_null=True, read_only=True)
    created_at = serializers.DateTimeField(read_only=True)
    started_at = serializers.DateTimeField(allow_null=True, read_only=True)
    finished_at = serializers.DateTimeField(allow_null=True, read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)
    estimated_cost_usd = CostField()
    max_estimated_cost_usd = CostField(allow_null=True)
    usage = serializers.SerializerMethodField()
    cost_usd = CostField()
    mode = serializers.CharField(read_only=True)
    service_tier = serializers.CharField(read_only=True)
    fallback = serializers.SerializerMethodField()
    batches = serializers.SerializerMethodField()
    results_url = serializers.SerializerMethodField()

    @extend_schema_field(UsageSerializer)
    def get_usage(self, job) -> dict:
        return job.usage_dict()

    @extend_schema_field(serializers.ChoiceField(choices=["none", "online"]))
    def get_fallback(self, job) -> str:
        return job.fallback or "none"

    @extend_schema_field(BatchOutSerializer(many=True))
    def get_batches(self, job) -> list[dict]:
        from crystallise.jobs.batch.book import public

        return [public(entry) for entry in job.batches or ()]

    def get_results_url(self, job) -> str:
        path = reverse(self.RESULTS_ROUTE, args=[job.pk])
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request else path


def flatten_errors(detail) -> dict[str, list[str]]:
    """DRF validation detail → {field: [messages]} (nested fields dotted)."""
    out: dict[str, list[str]] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                # DRF's ListField reports items as {index: errors}: shown like list items, `inclusion[0]`.
                if isinstance(key, int):
                    walk(f"{prefix}[{key}]", sub)
                else:
                    walk(f"{prefix}.{key}" if prefix else str(key), sub)
        elif isinstance(value, list) and value and not all(isinstance(v, str) for v in value):
            for index, sub in enumerate(value):
                if sub:
                    walk(f"{prefix}[{index}]" if prefix else f"[{index}]", sub)
        else:
            items = value if isinstance(value, list) else [value]
            out.setdefault(prefix or "non_field_errors", []).extend(str(v) for v in items)

    walk("", detail)
    return out


def invalid_input(detail) -> ValidationError:
    """DRF validation detail as the API's `400 validation`: the first problem in `detail`, all of them in `errors`."""
    errors = flatten_errors(detail)
    field, messages = next(iter(errors.items()))
    return ValidationError(f"Invalid input: {field}: {messages[0]}", errors=errors)


def validated(serializer: serializers.Serializer) -> dict:
    """The serializer's validated data, or the API's own `400 validation` (for callers outside a view)."""
    if serializer.is_valid():
        return dict(serializer.validated_data)
    raise invalid_input(serializer.errors)
