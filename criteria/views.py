from __future__ import annotations

from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from criteria.serializers import ConsolidateInSerializer, ConsolidateOutSerializer
from criteria.services import criteria_consolidate
from crystallise.auth import request_openai_key
from crystallise.openapi import error_responses

ERRORS = error_responses(400, 401, 405, 429, 502)


class Consolidate(APIView):
    @extend_schema(
        operation_id="criteria_consolidate",
        request=ConsolidateInSerializer,
        parameters=[OpenApiParameter("X-OpenAI-API-Key", str, OpenApiParameter.HEADER,
                                     description="Per-request OpenAI key (optional).")],
        responses={200: ConsolidateOutSerializer, **ERRORS},
        examples=[OpenApiExample(
            "Three criteria", request_only=True,
            value={"research_question": "Do triptans help adults with migraine?",
                   "criteria": [{"text": "Adults with migraine", "kind": "inclusion", "source": "protocol"},
                                {"text": "adult migraine patients", "kind": "inclusion", "source": "reviewer 2"},
                                {"text": "Children", "kind": "exclusion"}],
                   "min_confidence": 0.5},
        )],
    )
    def post(self, request):
        serializer = ConsolidateInSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        body = criteria_consolidate(
            caller=request.user,
            model=data["model"],
            research_question=data["research_question"].strip(),
            criteria=[dict(c) for c in data["criteria"]],
            min_confidence=data["min_confidence"],
            max_estimated_cost_usd=data.get("max_estimated_cost_usd"),
            request_openai_key=request_openai_key(request),
        )
        return Response(ConsolidateOutSerializer(body).data)
