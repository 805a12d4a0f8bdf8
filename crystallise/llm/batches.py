"""The provider's Batch API: upload a JSONL file of chat-completion requests, create a batch,
poll it, cancel it, download its output and error files, and read their lines.

`make_batch_client()` returns the backend's batch client: `OpenAIBatches` (the official SDK,
synchronous: the batch lane runs in short scheduled ticks, never waiting on a batch) or
`MockBatches` (offline: a batch is answered when it is created). Both speak in `BatchState`s
and raw file bytes; `read_output()` turns a file's lines into per-request answers with the
online client's own body and answer parsing (`crystallise.llm.openai_client`).
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import openai

from crystallise.errors import Category, LLMError
from crystallise.llm.backends import MOCK, OPENAI, get_backend
from crystallise.llm.base import CallOptions, LLMResult
from crystallise.llm.mock import brain
from crystallise.llm.openai_client import _BadOutput, classify, parse_answer, request_body

ENDPOINT = "/v1/chat/completions"
WINDOW = "24h"
# The provider's limits of one batch input file.
MAX_REQUESTS = 50_000
MAX_FILE_BYTES = 200 * 1024 * 1024
# Batches in these states will not change again.
TERMINAL = ("completed", "expired", "failed", "cancelled")


@dataclass
class BatchState:
    id: str
    status: str
    output_file_id: str | None = None
    error_file_id: str | None = None
    counts: dict[str, int] = field(default_factory=lambda: {"total": 0, "completed": 0, "failed": 0})
    # Why a batch failed (validation): "code: message" per error the provider gave.
    errors: list[str] = field(default_factory=list)
    input_file_id: str | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @classmethod
    def of(cls, batch) -> BatchState:
        counts = batch.request_counts
        errors = [f"{e.code or 'error'}: {e.message or ''}".strip() + (f" (line {e.line})" if e.line else "")
                  for e in ((batch.errors.data or []) if batch.errors else [])]
        return cls(
            id=batch.id, status=batch.status, output_file_id=batch.output_file_id, error_file_id=batch.error_file_id,
            counts={"total": counts.total, "completed": counts.completed, "failed": counts.failed} if counts
            else {"total": 0, "completed": 0, "failed": 0},
            errors=errors, input_file_id=batch.input_file_id,
        )


def _dumps(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def request_line(custom_id: str, messages: list[dict], options: CallOptions) -> bytes:
    """One JSONL input line: the same body the online client sends for this call."""
    body = request_body(messages, options)
    return _dumps({"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body})


@dataclass
class LineAnswer:
    """One request's line from an output or error file: an answer, or why there is none."""

    custom_id: str
    result: LLMResult | None = None
    error: LLMError | None = None


def line_error(status: int, body) -> LLMError:
    """A request answered with an error inside a batch, in the categories of the online client."""
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    message, code = str(error.get("message") or "")[:300], error.get("code")
    if status in (401, 403) or code == "insufficient_quota":
        what = "is out of quota" if code == "insufficient_quota" else f"was rejected (HTTP {status})"
        return LLMError(f"The OpenAI API key {what} inside the batch.", category=Category.AUTH, permanent=True)
    if status == 429:
        return LLMError("The model provider's rate limit was exceeded (429).", category=Category.RATE_LIMIT,
                        permanent=False)
    if status in (408, 409) or status >= 500:
        return LLMError(f"The model provider failed with HTTP {status}.", category=Category.UPSTREAM, permanent=False)
    return LLMError(f"The model provider refused the request (HTTP {status}): {message}",
                    category=Category.VALIDATION, permanent=True)


def read_output(data: bytes, schema, backend: str) -> Iterator[LineAnswer]:
    """Every line of an output or error file as a `LineAnswer` (file order: not the input's)."""
    for raw in data.splitlines():
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
            custom_id = str(line["custom_id"])
        except (ValueError, KeyError, TypeError):
            continue  # a line that names no request cannot be matched; its request counts as missing
        response = line.get("response") or None
        if response is None:
            error = line.get("error") or {}
            code = str(error.get("code") or "")
            # Expired or cancelled before it ran: transient (it can go into a new batch).
            yield LineAnswer(custom_id, error=LLMError(
                f"The batch ended before this request ran ({code or 'no answer'}).",
                category=Category.UPSTREAM, permanent=False))
            continue
        status = int(response.get("status_code") or 0)
        body = response.get("body")
        if status != 200:
            yield LineAnswer(custom_id, error=line_error(status, body))
            continue
        try:
            parsed, usage, reported = parse_answer(body, schema)
        except _BadOutput as bad:
            yield LineAnswer(custom_id, error=bad)
            continue
        yield LineAnswer(custom_id, result=LLMResult(parsed=parsed, usage=usage, backend=backend, model=reported))


class OpenAIBatches:
    """The Batch API through the official SDK. Every SDK error becomes an `LLMError` (`classify`)."""

    backend = OPENAI.name

    def __init__(self, *, api_key: str | None, base_url: str | None = None, timeout: float = 300.0) -> None:
        # No SDK retries: a retried `batches.create` whose first reply was lost would create a second
        # batch. A failed call is retried by the next tick, which first looks the batch up (`find`).
        self._client = openai.OpenAI(api_key=api_key or "", base_url=base_url or None, max_retries=0, timeout=timeout)

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except openai.OpenAIError as exc:
            raise classify(exc) from None

    def upload(self, data: bytes, name: str) -> str:
        return self._call(self._client.files.create, file=(name, io.BytesIO(data), "application/jsonl"),
                          purpose="batch").id

    def create(self, input_file_id: str, metadata: dict[str, str]) -> BatchState:
        return BatchState.of(self._call(self._client.batches.create, input_file_id=input_file_id, endpoint=ENDPOINT,
                                        completion_window=WINDOW, metadata=metadata))

    def find(self, input_file_id: str) -> BatchState | None:
        """The batch already created from `input_file_id`, if any (a create whose reply was lost)."""
        page = self._call(self._client.batches.list, limit=100)
        for batch in page.data:
            if batch.input_file_id == input_file_id:
                return BatchState.of(batch)
        return None

    def retrieve(self, batch_id: str) -> BatchState:
        return BatchState.of(self._call(self._client.batches.retrieve, batch_id))

    def cancel(self, batch_id: str) -> BatchState:
        return BatchState.of(self._call(self._client.batches.cancel, batch_id))

    def content(self, file_id: str) -> bytes:
        return self._call(self._client.files.content, file_id).content

    def close(self) -> None:
        self._client.close()


class MockBatches:
    """The mock backend's Batch API: a batch is answered (by the mock answers) when it is created.

    Answers live in this process: a batch polled from another process, or after a restart, is
    reported `expired` with no output, and the lane resubmits its requests.
    """

    backend = MOCK.name
    _files: dict[str, bytes] = {}
    _batches: dict[str, BatchState] = {}

    def __init__(self, **_: object) -> None:
        pass

    def upload(self, data: bytes, name: str) -> str:
        file_id = f"file-mock-{uuid.uuid4().hex}"
        self._files[file_id] = data
        return file_id

    def create(self, input_file_id: str, metadata: dict[str, str]) -> BatchState:
        out = io.BytesIO()
        lines = self._files.pop(input_file_id, b"").splitlines()
        for raw in lines:
            line = json.loads(raw)
            body = line["body"]
            name = body["response_format"]["json_schema"]["name"]
            answer = brain(name, body["messages"])
            content = json.dumps(answer)
            completion = {"choices": [{"index": 0, "finish_reason": "stop",
                                       "message": {"role": "assistant", "content": content}}], "model": ""}
            out.write(_dumps({"id": f"batch_req_{uuid.uuid4().hex}", "custom_id": line["custom_id"],
                              "response": {"status_code": 200, "body": completion}, "error": None}))
        output_id = self.upload(out.getvalue(), "output.jsonl")
        state = BatchState(id=f"batch_mock_{uuid.uuid4().hex}", status="completed", output_file_id=output_id,
                           counts={"total": len(lines), "completed": len(lines), "failed": 0},
                           input_file_id=input_file_id)
        self._batches[state.id] = state
        return state

    def find(self, input_file_id: str) -> BatchState | None:
        return next((b for b in self._batches.values() if b.input_file_id == input_file_id), None)

    def retrieve(self, batch_id: str) -> BatchState:
        return self._batches.get(batch_id) or BatchState(id=batch_id, status="expired")

    def cancel(self, batch_id: str) -> BatchState:
        return self.retrieve(batch_id)

    def content(self, file_id: str) -> bytes:
        return self._files.pop(file_id, b"")

    def close(self) -> None:
        return None


def make_batch_client(*, api_key: str | None, backend: str):
    """The Batch API client of `backend` (a name from the backend registry)."""
    from django.conf import settings

    spec = get_backend(backend)
    # Files of up to 200 MB go up and come down in one call each: a longer timeout than a chat call's.
    return spec.batch_client_class()(api_key=api_key, base_url=settings.CRYSTALLISE_OPENAI_BASE_URL,
                                     timeout=max(300.0, settings.CRYSTALLISE_LLM_TIMEOUT))

