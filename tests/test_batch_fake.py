"""The fake provider's files and batches, through the real SDK over HTTP."""

from __future__ import annotations

import io
import json

import openai
import pytest

from tests.conftest import SERVER_OPENAI_KEY


def lines(n: int, model: str = "gpt-5-nano") -> bytes:
    body = {"model": model, "messages": [{"role": "user", "content": "Say hello."}]}
    return b"".join(json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
                                "body": body}).encode() + b"\n" for i in range(n))


@pytest.fixture
def sdk(fake_openai):
    client = openai.OpenAI(api_key=SERVER_OPENAI_KEY, base_url=fake_openai.base_url, max_retries=0)
    yield client
    client.close()


def create(sdk, n: int = 4):
    file = sdk.files.create(file=("in.jsonl", io.BytesIO(lines(n)), "application/jsonl"), purpose="batch")
    assert file.purpose == "batch" and file.bytes > 0
    return sdk.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")


def test_a_batch_moves_through_its_statuses_and_answers_every_line(sdk, fake_openai):
    batch = create(sdk)
    assert batch.status == "validating" and batch.request_counts.total == 4
    seen = [sdk.batches.retrieve(batch.id).status for _ in range(3)]
    assert seen == ["in_progress", "finalizing", "completed"]
    done = sdk.batches.retrieve(batch.id)
    assert done.request_counts.completed == 4 and done.error_file_id is None
    output = [json.loads(line) for line in sdk.files.content(done.output_file_id).content.splitlines()]
    assert sorted(o["custom_id"] for o in output) == ["r0", "r1", "r2", "r3"]
    assert all(o["response"]["status_code"] == 200 and o["response"]["body"]["choices"] for o in output)
    assert [b.id for b in sdk.batches.list(limit=10).data] == [batch.id]


def test_injected_failures(sdk, fake_openai):
    fake_openai.batches.config.update({"steps": 0, "script": ["expire:0.5", "all_failed", "fail_validation"]})
    expired, failed_lines, invalid = create(sdk), create(sdk), create(sdk)
    assert expired.status == "expired" and expired.request_counts.completed == 2
    errors = [json.loads(x) for x in sdk.files.content(expired.error_file_id).content.splitlines()]
    assert {e["error"]["code"] for e in errors} == {"batch_expired"}
    assert failed_lines.status == "completed" and failed_lines.output_file_id is None
    assert failed_lines.request_counts.failed == 4
    assert invalid.status == "failed" and invalid.errors.data[0].line == 1


def test_the_enqueued_token_cap_fails_a_batch_at_validation(sdk, fake_openai):
    fake_openai.batches.config.enqueued_token_limit = 30
    batch = create(sdk)
    assert batch.status == "failed" and batch.errors.data[0].code == "token_limit_exceeded"


def test_cancel_keeps_what_ran(sdk, fake_openai):
    fake_openai.batches.config.steps = 5
    batch = create(sdk)
    assert sdk.batches.cancel(batch.id).status == "cancelling"
    cancelled = sdk.batches.retrieve(batch.id)
    assert cancelled.status == "cancelled" and cancelled.request_counts.completed == 2
    with pytest.raises(openai.ConflictError):
        sdk.batches.cancel(batch.id)


def test_unknown_ids_and_keys_are_refused(sdk, fake_openai):
    with pytest.raises(openai.NotFoundError):
        sdk.batches.retrieve("batch_missing")
    with pytest.raises(openai.BadRequestError):
        sdk.batches.create(input_file_id="file-missing", endpoint="/v1/chat/completions", completion_window="24h")
    fake_openai.config.revoked_keys = {SERVER_OPENAI_KEY}
    with pytest.raises(openai.AuthenticationError):
        sdk.files.create(file=("in.jsonl", io.BytesIO(lines(1)), "application/jsonl"), purpose="batch")


def test_flex_requests_report_their_tier(sdk, fake_openai):
    fake_openai.config.flex_unavailable = 1
    body = {"model": "gpt-5-nano", "messages": [{"role": "user", "content": "Hi"}], "service_tier": "flex"}
    with pytest.raises(openai.RateLimitError) as refused:
        sdk.post("/chat/completions", cast_to=object, body=body)
    assert refused.value.code == "resource_unavailable"
    answer = sdk.post("/chat/completions", cast_to=object, body=body)
    assert answer["service_tier"] == "flex"
