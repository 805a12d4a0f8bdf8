from __future__ import annotations

from rest_framework import serializers

from crystallise.serializers import CostField, NumberField, StrictSerializer, UsageSerializer

MAX_CRITERIA = 200
MAX_CRITERION_CHARS = 2_000


class CriterionInSerializer(StrictSerializer):
    text = serializers.CharField(max_length=MAX_CRITERION_CHARS)
    kind = serializers.ChoiceField(choices=["inclusion", "exclusion"])
    source = serializers.CharField(required=False, allow_blank=True, allow_null=True, max_length=200)


class ConsolidateInSerializer(StrictSerializer):
    model = serializers.CharField(required=False, default="gpt-5-nano", max_length=64)
    research_question = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)
    criteria = CriterionInSerializer(many=True, allow_empty=False, max_length=MAX_CRITERIA)
    min_confidence = NumberField(required=False, default=0.5, min_value=0.0, max_value=1.0)
    max_estimated_cost_usd = serializers.DecimalField(
        required=False, allow_null=True, max_digits=16, decimal_places=8, min_value=0, coerce_to_string=False
    )


class ProposalSerializer(serializers.Serializer):
    text = serializers.CharField()
    rationale = serializers.CharField(allow_blank=True)
    merged_from = serializers.ListField(child=serializers.IntegerField())
    confidence = serializers.FloatField()


class WarningSerializer(serializers.Serializer):
    reason = serializers.ChoiceField(choices=["confidence", "length", "schema"])
    message = serializers.CharField()
    proposal = serializers.JSONField(allow_null=True)


class ConsolidateOutSerializer(serializers.Serializer):
    inclusion = ProposalSerializer(many=True)
    exclusion = ProposalSerializer(many=True)
    warnings = WarningSerializer(many=True)
    usage = UsageSerializer()
    cost_usd = CostField()
    llm_backend = serializers.CharField()
