"""Criteria consolidation over the API, with the fake provider over HTTP."""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import SERVER_OPENAI_KEY

pytestmark = pytest.mark.django_db

URL = "/v1/criteria/consolidate"
CRITERIA = [
    {"text": "Randomized controlled trials", "kind": "inclusion", "source": "alice"},
    {"text": "randomized  controlled trials.", "kind": "inclusion", "source": "bob"},
    {"text": "Adults with migraine", "kind": "inclusion", "source": "alice"},
    {"text": "Pediatric populations", "kind": "exclusion", "source": "bob"},
]


def consolidate(api, **body):
    payload = {"research_question": "Do triptans relieve migraine?", "criteria": CRITERIA, **body}
    return api.post(URL, payload, format="json")


def user_prompt(fake) -> str:
    return next(m["content"] for m in fake.requests[-1]["body"]["messages"] if m["role"] == "user")


def proposal(text="Randomized controlled trials of adults", merged_from=(0, 2), confidence=0.9, **extra):
    return {"text": text, "rationale": "Same population.", "merged_from": list(merged_from),
            "confidence": confidence, **extra}


def answer(inclusion=(), exclusion=()):
    return lambda body: {"inclusion": list(inclusion), "exclusion": list(exclusion)}


def test_duplicates_are_merged_without_spending_tokens_on_them(api, fake_openai):
    response = consolidate(api)
    assert response.status_code == 200, response.json()
    body = response.json()
    assert fake_openai.count == 1
    prompt = user_prompt(fake_openai)
    assert prompt.lower().count("randomized") == 1  # the duplicate was never sent
    assert "[1]" not in prompt and "[0] (inclusion) Randomized controlled trials" in prompt
    rct = next(p for p in body["inclusion"] if p["text"] == "Randomized controlled trials")
    assert rct["merged_from"] == [0, 1]
    assert [p["merged_from"] for p in body["exclusion"]] == [[3]]
    assert body["warnings"] == [] and body["llm_backend"] == "openai"
    assert body["usage"]["input_tokens"] == fake_openai.stats["prompt_tokens"]
    assert body["cost_usd"] > 0
    assert fake_openai.stats["keys_seen"] == {SERVER_OPENAI_KEY: 1}


def test_each_filter_reason_is_a_warning(api, fake_openai):
    confident = proposal()
    fake_openai.config.responder = answer(
        inclusion=[
            confident,
            proposal(text="Doubtful merge", confidence=0.2),
            proposal(text="x" * 301),
            proposal(text="Points nowhere", merged_from=[7]),
            proposal(text="Points at nothing", merged_from=[]),
            {"rationale": "no text"},
            {"text": "bad types", "rationale": "r", "merged_from": "all", "confidence": 0.9},
        ],
        exclusion=[proposal(text="Children under 12", merged_from=[3], confidence=0.6)],
    )
    body = consolidate(api, min_confidence=0.5).json()
    assert body["inclusion"] == [{**confident, "merged_from": [0, 1, 2]}]  # 0's duplicate 1 added
    assert [p["text"] for p in body["exclusion"]] == ["Children under 12"]
    reasons = [w["reason"] for w in body["warnings"]]
    assert reasons == ["confidence", "length", "schema", "schema", "schema", "schema"]
    assert body["warnings"][0]["proposal"]["text"] == "Doubtful merge"
    assert body["warnings"][-1]["proposal"]["merged_from"] == "all"  # as the model returned it
    assert all(w["message"] for w in body["warnings"])


def test_all_dropped_is_a_200_with_empty_lists(api, fake_openai):
    fake_openai.config.responder = answer(inclusion=[proposal(confidence=0.1)], exclusion=[proposal(confidence=0.3)])
    response = consolidate(api, min_confidence=0.95)
    assert response.status_code == 200
    body = response.json()
    assert body["inclusion"] == [] and body["exclusion"] == []
    assert [w["reason"] for w in body["warnings"]] == ["confidence", "confidence"]


def test_answer_failing_the_schema_after_retries_is_one_schema_warning(api, fake_openai, settings):
    settings.CRYSTALLISE_LLM_MAX_ATTEMPTS = 3
    fake_openai.config.p_schema_invalid = 1.0
    response = consolidate(api)
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["inclusion"] == [] and body["exclusion"] == []
    assert len(body["warnings"]) == 1 and body["warnings"][0]["reason"] == "schema"
    assert body["warnings"][0]["proposal"] is None
    assert fake_openai.count == 3
    assert body["usage"]["output_tokens"] == fake_openai.stats["completion_tokens"] > 0  # billed all the same


def test_rejected_key_is_400_auth(api, fake_openai):
    fake_openai.config.valid_keys = {"sk-other"}
    response = consolidate(api)
    assert response.status_code == 400
    assert response.json()["error_category"] == "auth"
    assert fake_openai.count == 1  # never retried


def test_upstream_exhausted_is_502_and_rate_limit_429(api, fake_openai, settings):
    settings.CRYSTALLISE_LLM_MAX_ATTEMPTS = 2
    fake_openai.config.p_500 = 1.0
    response = consolidate(api)
    assert response.status_code == 502 and response.json()["error_category"] == "upstream"
    fake_openai.config.p_500 = 0.0
    fake_openai.config.p_429 = 1.0
    response = consolidate(api)
    assert response.status_code == 429 and response.json()["error_category"] == "rate_limit"


def test_a_provider_slower_than_the_request_time_limit_is_502_in_the_error_shape(api, fake_openai, settings):
    """A synchronous endpoint answers within CRYSTALLISE_SYNC_TIMEOUT, whatever the provider does."""
    settings.CRYSTALLISE_SYNC_TIMEOUT = 1.0
    fake_openai.config.latency = 3.0
    started = time.monotonic()
    response = consolidate(api)
    assert time.monotonic() - started < 2.5
    assert response.status_code == 502 and response.json()["error_category"] == "upstream"
    assert "time limit (1 s" in response.json()["detail"]


def test_transient_errors_are_retried(api, fake_openai):
    fake_openai.config.script = ["429", "500", "ok"]
    response = consolidate(api)
    assert response.status_code == 200 and response.json()["inclusion"]
    assert fake_openai.count == 3


def test_budget_cap_refuses_before_any_call(api, fake_openai):
    response = consolidate(api, max_estimated_cost_usd=0.0000001)
    assert response.status_code == 400
    assert response.json()["error_category"] == "budget" and response.json()["estimated_cost_usd"] > 0
    assert fake_openai.count == 0


@pytest.mark.parametrize("body, field", [
    ({"criteria": []}, "criteria"),
    ({"criteria": [{"text": "x", "kind": "maybe"}]}, "criteria[0].kind"),
    ({"criteria": CRITERIA, "min_confidence": 2}, "min_confidence"),
    ({"criteria": CRITERIA, "bogus": 1}, "bogus"),
])
def test_invalid_input_is_400_validation(api, fake_openai, body, field):
    response = api.post(URL, body, format="json")
    assert response.status_code == 400
    assert response.json()["error_category"] == "validation"
    assert any(name.startswith(field) for name in response.json()["errors"]), response.json()
    assert fake_openai.count == 0


def test_unknown_or_unqualified_model_is_refused(api, fake_openai):
    for model in ("gpt-9", "gpt-3.5-turbo"):
        response = consolidate(api, model=model)
        assert response.status_code == 400 and response.json()["errors"]["model"]
    assert fake_openai.count == 0


def test_no_service_key_is_401(anon, fake_openai):
    response = anon.post(URL, {"criteria": CRITERIA}, format="json")
    assert response.status_code == 401 and response.json()["error_category"] == "auth"


def test_wrong_method_is_405(api):
    response = api.get(URL)
    assert response.status_code == 405 and response.json()["error_category"] == "validation"


def test_missing_route_is_404(api):
    response = api.post("/v1/criteria/consolidate/extra", {}, format="json")
    assert response.status_code == 404 and response.json()["error_category"] == "not_found"


def test_no_openai_key_fails_fast(api, fake_openai, settings):
    settings.CRYSTALLISE_OPENAI_API_KEY = ""
    response = consolidate(api)
    assert response.status_code == 400 and response.json()["error_category"] == "auth"
    assert fake_openai.count == 0


def test_mock_backend_is_free_and_deterministic(api, settings):
    settings.CRYSTALLISE_LLM_BACKEND = "mock"
    settings.CRYSTALLISE_OPENAI_API_KEY = ""
    first, second = consolidate(api).json(), consolidate(api).json()
    assert first == second and first["llm_backend"] == "mock" and first["cost_usd"] == 0
    assert json.dumps(first["inclusion"])
