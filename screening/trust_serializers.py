"""Input and output shapes of the human review, evaluation, validation and report endpoints."""

from __future__ import annotations

import json

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from crystallise.serializers import StrictSerializer
from screening import reviews
from screening.evaluation.certification import MAX_SAMPLE, MAX_SEED
from screening.models import Decision, HumanReview, SamplePopulation


class ReviewInSerializer(serializers.Serializer):
    """Documentation of one review (validated in bulk by screening.reviews)."""

    paper_id = serializers.CharField()
    decision = serializers.ChoiceField(choices=Decision.choices)
    reviewer = serializers.CharField(min_length=1, max_length=reviews.MAX_REVIEWER_CHARS)
    note = serializers.CharField(required=False, allow_blank=True, max_length=reviews.MAX_NOTE_CHARS)


@extend_schema_field(ReviewInSerializer(many=True))
class ReviewsField(serializers.Field):
    """Up to 10,000 reviews checked in one pass (a DRF field per value would be slow at that size)."""

    def to_internal_value(self, data):
        if isinstance(data, str):  # a multipart form field
            try:
                data = json.loads(data)
            except ValueError:
                raise serializers.ValidationError("Must be a JSON array of reviews.") from None
        return reviews.parse_json_reviews(data)


class ReviewsCreateSerializer(StrictSerializer):
    reviews = ReviewsField(required=False)
    reviews_file = serializers.FileField(required=False, help_text="CSV: paper_id, decision, reviewer, note (multipart).")

    exclusive = ("reviews", "reviews_file")

    def validate(self, attrs):
        if "reviews" not in attrs and "reviews_file" not in attrs:
            raise serializers.ValidationError({"reviews": ["This field is required (or upload reviews_file)."]})
        return attrs


class ReviewsRecordedSerializer(serializers.Serializer):
    recorded = serializers.IntegerField(help_text="Reviews stored by this call.")
    unchanged = serializers.IntegerField(help_text="Reviews equal to their reviewer's latest decision and note.")


class HumanReviewSerializer(serializers.ModelSerializer):
    api_key = serializers.CharField(source="api_key_label", help_text="Name of the service key that recorded it.")

    class Meta:
        model = HumanReview
        fields = ["reviewer", "decision", "previous_decision", "note", "created_at", "api_key"]


class ValidationSampleCreateSerializer(StrictSerializer):
    size = serializers.IntegerField(min_value=1, max_value=MAX_SAMPLE)
    seed = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=MAX_SEED)

    def get_fields(self):
        fields = super().get_fields()
        # `from` is the documented name (a Python keyword, so it cannot be declared as an attribute).
        fields["from"] = serializers.ChoiceField(choices=SamplePopulation.values, default=SamplePopulation.EXCLUDED)
        return fields


class ValidationSampleSerializer(serializers.Serializer):
    """A sample as listed (its papers and figures are at its own URL)."""

    id = serializers.UUIDField()
    size = serializers.IntegerField()
    seed = serializers.IntegerField()
    population_size = serializers.IntegerField(help_text="Papers in the population when the sample was drawn.")
    threshold = serializers.FloatField(help_text="The job's threshold, which defined the population.")
    created_at = serializers.DateTimeField()

    def get_fields(self):
        fields = super().get_fields()
        fields["from"] = serializers.ChoiceField(choices=SamplePopulation.values, source="population")
        return fields


class ValidationSampleDrawnSerializer(ValidationSampleSerializer):
    paper_ids = serializers.ListField(child=serializers.CharField(), help_text="The sampled papers, in input order.")
