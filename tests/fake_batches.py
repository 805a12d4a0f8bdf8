"""Files and batches for the fake OpenAI server (mounted by tests/fake_openai.py), over real HTTP.

    POST /v1/files (multipart, purpose=batch)    GET /v1/files/{id}, /v1/files/{id}/content
    POST /v1/batches, GET /v1/batches, GET /v1/batches/{id}, POST /v1/batches/{id}/cancel
    GET|POST /_fake/batches/config (JSON merge), GET /_fake/batches/stats

A batch moves one status per retrieve, `steps` retrieves apart (0: finished on its first
retrieve): validating → in_progress → finalizing → completed. Its lines are answered by the
chat-completions handler itself (same content, tokens, faults, `script` entries, `p_500`...),
non-200 answers going to the error file. Injected failures, one `script` entry per created batch:

    ok                 as above
    expire:F           expired with the first fraction F of the lines answered, the rest
                       in the error file as batch_expired
    all_failed         completed, every line failed (HTTP 500 in the error file), no output file
    fail_validation    failed at validation, naming line 1 as invalid
    fail_token_limit   failed at validation: the enqueued token limit was reached

`p_line_error` makes each line fail with `line_error_status` on its own (seeded by the
server's seed); `enqueued_token_limit` fails (token_limit_exceeded) a batch that would put more
prompt tokens in flight than that; `lose_create_replies` creates batches but answers 500;
`fail_uploads` answers uploads with 500; `create_wait_before` / `create_wait_after` hold a create that
many seconds before making the batch / before answering (a cancel can land in between). Cancelling moves a batch to cancelling, then cancelled with
the first `cancel_done` fraction of its lines answered.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import random
import time
import uuid
from email.parser import BytesParser
from email.policy import default as default_policy
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fake_content import set_fields

ORDER = ("validating", "in_progress", "finalizing", "completed")
ENDED = ("completed", "expired", "failed", "cancelled")


@dataclasses.dataclass
class BatchConfig:
    steps: int = 1
    script: list[str] = dataclasses.field(default_factory=list)
    p_line_error: float = 0.0
    line_error_status: int = 500
    line_error_code: str | None = None  # the error's code in those lines ("insufficient_quota" with 429)
    enqueued_token_limit: int | None = None
    cancel_done: float = 0.5
    shuffle: bool = True  # output lines in another order than the input's, as the provider may
    lose_create_replies: int = 0  # the next N creates make the batch but answer 500 (a reply lost on the way)
    fail_uploads: int = 0  # the next N file uploads answer 500
    create_wait_before: float = 0.0  # seconds a create waits before making the batch
    create_wait_after: float = 0.0  # seconds it waits after making it, before answering

    def update(self, changes: dict[str, Any]) -> None:
        set_fields(self, changes, what="batch config")


def _error(status: int, message: str, code: str | None = None) -> Response:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}},
                        status)


class FakeBatches:
    def __init__(self, fake) -> None:
        self.fake = fake
        self.reset()

    def reset(self) -> None:
        self.config = BatchConfig()
        self.files: dict[str, dict] = {}
        self.batches: dict[str, dict] = {}
        self.stats: dict[str, Any] = {"files": 0, "batches": 0, "lines": 0, "retrieves": 0, "cancels": 0,
                                      "creates": 0, "submitted": collections.Counter()}
        self._rng = random.Random(self.fake.config.seed)

    def routes(self) -> list[Route]:
        return [
            Route("/v1/files", self._create_file, methods=["POST"]),
            Route("/v1/files/{file_id}", self._get_file, methods=["GET"]),
            Route("/v1/files/{file_id}/content", self._file_content, methods=["GET"]),
            Route("/v1/batches", self._create_batch, methods=["POST"]),
            Route("/v1/batches", self._list_batches, methods=["GET"]),
            Route("/v1/batches/{batch_id}", self._retrieve, methods=["GET"]),
            Route("/v1/batches/{batch_id}/cancel", self._cancel, methods=["POST"]),
            Route("/_fake/batches/config", self._config_endpoint, methods=["GET", "POST"]),
            Route("/_fake/batches/stats", self._stats_endpoint),
        ]

    # --- helpers ---
    def _key(self, request: Request) -> str | None:
        auth = request.headers.get("authorization", "")
        key = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        cfg = self.fake.config
        if not key or key in cfg.revoked_keys or (cfg.valid_keys is not None and key not in cfg.valid_keys):
            return None
        return key

    def _unauthorized(self) -> Response:
        return _error(401, "Incorrect API key provided.", "invalid_api_key")

    def _store(self, data: bytes, filename: str, purpose: str) -> dict:
        file = {"id": f"file-{uuid.uuid4().hex[:24]}", "object": "file", "bytes": len(data),
                "created_at": int(time.time()), "filename": filename, "purpose": purpose, "status": "processed"}
        self.files[file["id"]] = {**file, "data": data}
        return file

    @staticmethod
    def _public_file(file: dict) -> dict:
        return {k: v for k, v in file.items() if k != "data"}

    @staticmethod
    def _public(batch: dict) -> dict:
        return {k: v for k, v in batch.items() if not k.startswith("_")}

    # --- files ---
    async def _create_file(self, request: Request) -> Response:
        if self._key(request) is None:
            return self._unauthorized()
        raw = await request.body()
        if self.config.fail_uploads > 0:
            self.config.fail_uploads -= 1
            return _error(500, "The server had an error while processing your request.")
        message = BytesParser(policy=default_policy).parsebytes(
            b"Content-Type: " + request.headers.get("content-type", "").encode() + b"\r\n\r\n" + raw)
        fields: dict[str, Any] = {}
        if message.is_multipart():
            for part in message.iter_parts():
                name = part.get_param("name", header="content-disposition")
                fields[name] = (part.get_filename(), part.get_payload(decode=True))
        if "file" not in fields or "purpose" not in fields:
            return _error(400, "A multipart body with 'file' and 'purpose' is required.")
        purpose = fields["purpose"][1].decode()
        if purpose not in ("batch", "assistants", "fine-tune", "vision", "user_data", "evals"):
            return _error(400, f"Invalid purpose {purpose!r}.")
        self.stats["files"] += 1
        return JSONResponse(self._store(fields["file"][1], fields["file"][0] or "upload", purpose))

    async def _get_file(self, request: Request) -> Response:
        file = self.files.get(request.path_params["file_id"])
        if self._key(request) is None:
            return self._unauthorized()
        return JSONResponse(self._public_file(file)) if file else _error(404, "No such File object.")

    async def _file_content(self, request: Request) -> Response:
        if self._key(request) is None:
            return self._unauthorized()
        file = self.files.get(request.path_params["file_id"])
        if file is None:
            return _error(404, "No such File object.")
        return Response(file["data"], 200, media_type="application/octet-stream")

    # --- batches ---
    async def _create_batch(self, request: Request) -> Response:
        key = self._key(request)
        if key is None:
            return self._unauthorized()
        body = json.loads(await request.body() or b"{}")
        self.stats["creates"] += 1
        await asyncio.sleep(self.config.create_wait_before)
        file = self.files.get(body.get("input_file_id"))
        if file is None or file["purpose"] != "batch":
            return _error(400, "input_file_id must be a file uploaded with purpose 'batch'.")
        if body.get("endpoint") != "/v1/chat/completions" or body.get("completion_window") != "24h":
            return _error(400, "Only endpoint /v1/chat/completions and completion_window 24h are supported here.")
        now = int(time.time())
        batch = {
            "id": f"batch_{uuid.uuid4().hex[:24]}", "object": "batch", "endpoint": body["endpoint"],
            "input_file_id": file["id"], "completion_window": "24h", "status": "validating",
            "output_file_id": None, "error_file_id": None, "created_at": now, "in_progress_at": None,
            "expires_at": now + 86400, "finalizing_at": None, "completed_at": None, "failed_at": None,
            "expired_at": None, "cancelling_at": None, "cancelled_at": None, "errors": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0}, "metadata": body.get("metadata"),
            "model": None, "_key": key, "_fate": self.config.script.pop(0) if self.config.script else "ok",
            "_polls": 0, "_lines": [], "_tokens": 0,
        }
        problem = self._parse_lines(batch, file["data"])
        if problem is not None:
            self._fail(batch, *problem)
        self.batches[batch["id"]] = batch
        self.stats["batches"] += 1
        if self.config.steps == 0 and problem is None:
            await self._advance(batch, to_end=True)
        await asyncio.sleep(self.config.create_wait_after)
        if self.config.lose_create_replies > 0:
            self.config.lose_create_replies -= 1
            return _error(500, "The server had an error while processing your request.")
        return JSONResponse(self._public(batch))

    def _parse_lines(self, batch: dict, data: bytes) -> tuple[str, str, int | None] | None:
        seen = set()
        from tests.fake_openai import prompt_token_ids

        for number, raw in enumerate(data.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
                custom_id, body = str(line["custom_id"]), line["body"]
                assert line.get("url") == batch["endpoint"] and line.get("method") == "POST"
                assert isinstance(body, dict) and body.get("model") and isinstance(body.get("messages"), list)
            except (ValueError, KeyError, TypeError, AssertionError):
                return "invalid_request", "The line is not a valid batch request.", number
            if custom_id in seen:
                return "duplicate_custom_id", f"The custom_id {custom_id!r} appears twice.", number
            seen.add(custom_id)
            batch["_lines"].append((custom_id, body))
            batch["_tokens"] += len(prompt_token_ids(body["messages"]))
            batch["model"] = body["model"]
        if not batch["_lines"]:
            return "empty_file", "The input file has no requests.", None
        batch["request_counts"]["total"] = len(batch["_lines"])
        fate = batch["_fate"]
        if fate == "fail_validation":
            return "invalid_request", "The request on this line is invalid.", 1
        limit = self.config.enqueued_token_limit
        waiting = sum(b["_tokens"] for b in self.batches.values() if b["status"] not in ENDED)
        if fate == "fail_token_limit" or (limit is not None and waiting + batch["_tokens"] > limit):
            return ("token_limit_exceeded", f"Enqueued token limit reached for {batch['model']} in organization "
                    f"org-fake. Limit: {limit or 0:,} enqueued tokens.", None)
        self.stats["lines"] += len(batch["_lines"])
        self.stats["submitted"].update(custom_id for custom_id, _ in batch["_lines"])
        return None

    def _fail(self, batch: dict, code: str, message: str, line: int | None) -> None:
        batch.update(status="failed", failed_at=int(time.time()),
                     errors={"object": "list", "data": [{"code": code, "message": message, "param": None,
                                                         "line": line}]})

    async def _list_batches(self, request: Request) -> Response:
        if self._key(request) is None:
            return self._unauthorized()
        limit = int(request.query_params.get("limit", 20))
        data = [self._public(b) for b in sorted(self.batches.values(), key=lambda b: b["created_at"], reverse=True)]
        data = data[:limit]
        return JSONResponse({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                             "last_id": data[-1]["id"] if data else None, "has_more": False})

    async def _retrieve(self, request: Request) -> Response:
        if self._key(request) is None:
            return self._unauthorized()
        batch = self.batches.get(request.path_params["batch_id"])
        if batch is None:
            return _error(404, "No such Batch object.")
        self.stats["retrieves"] += 1
        await self._advance(batch)
        return JSONResponse(self._public(batch))

    async def _cancel(self, request: Request) -> Response:
        if self._key(request) is None:
            return self._unauthorized()
        batch = self.batches.get(request.path_params["batch_id"])
        if batch is None:
            return _error(404, "No such Batch object.")
        if batch["status"] in ENDED:
            return _error(409, f"Cannot cancel a batch with status '{batch['status']}'.")
        self.stats["cancels"] += 1
        batch.update(status="cancelling", cancelling_at=int(time.time()))
        return JSONResponse(self._public(batch))

    # --- progress ---
    async def _advance(self, batch: dict, to_end: bool = False) -> None:
        if batch["status"] in ENDED:
            return
        if batch["status"] == "cancelling":
            await self._finish(batch, "cancelled", self.config.cancel_done)
            return
        batch["_polls"] += 1
        if not to_end and batch["_polls"] < self.config.steps:
            return
        batch["_polls"] = 0
        step = ORDER.index(batch["status"]) + 1
        if to_end or ORDER[step] == "completed":
            fate = batch["_fate"]
            if fate.startswith("expire"):
                await self._finish(batch, "expired", float(fate.partition(":")[2] or 0.5))
            else:
                await self._finish(batch, "completed", 1.0, all_failed=fate == "all_failed")
            return
        batch["status"] = ORDER[step]
        batch[f"{ORDER[step]}_at"] = int(time.time())

    async def _finish(self, batch: dict, status: str, done: float, all_failed: bool = False) -> None:
        lines = batch["_lines"]
        answered = int(len(lines) * done)
        output, errors = [], []
        completed = failed = 0
        for index, (custom_id, body) in enumerate(lines):
            request_id = f"req_{uuid.uuid4().hex}"
            if index >= answered:
                code = {"expired": "batch_expired", "cancelled": "batch_cancelled"}.get(status, "batch_failed")
                errors.append({"id": f"batch_req_{uuid.uuid4().hex}", "custom_id": custom_id, "response": None,
                               "error": {"code": code, "message": f"This request could not be executed ({code})."}})
                continue
            if all_failed or (self.config.p_line_error and self._rng.random() < self.config.p_line_error):
                code_status = 500 if all_failed else self.config.line_error_status
                reply = {"error": {"message": "The server had an error processing this request.",
                                   "type": "server_error", "param": None,
                                   "code": None if all_failed else self.config.line_error_code}}
            else:
                code_status, reply = await self._answer(batch, body, request_id)
            line = {"id": f"batch_req_{uuid.uuid4().hex}", "custom_id": custom_id,
                    "response": {"status_code": code_status, "request_id": request_id, "body": reply}, "error": None}
            if code_status == 200:
                output.append(line)
                completed += 1
            else:
                errors.append(line)
                failed += 1
        if self.config.shuffle:
            self._rng.shuffle(output)
            self._rng.shuffle(errors)
        now = int(time.time())
        if output:
            batch["output_file_id"] = self._store(_jsonl(output), "batch_output.jsonl", "batch_output")["id"]
        if errors:
            batch["error_file_id"] = self._store(_jsonl(errors), "batch_errors.jsonl", "batch_output")["id"]
        batch["request_counts"] = {"total": len(lines), "completed": completed, "failed": failed}
        batch.update(status=status, **{f"{status}_at": now})

    async def _answer(self, batch: dict, body: dict, request_id: str) -> tuple[int, Any]:
        """One line answered by the chat-completions handler: the same content, tokens and faults."""
        stats = self.fake._stats
        entry = {"path": "/v1/chat/completions (batch)", "key": batch["_key"], "status": None, "fault": None,
                 "request_id": request_id, "body": body, "content_type": "application/json"}
        with self.fake._lock:
            stats["requests"] += 1
        response = await self.fake._respond(body, batch["_key"], entry, {"x-request-id": request_id}, stats)
        try:
            reply = json.loads(response.body)
        except ValueError:
            reply = {"error": {"message": "malformed", "type": "server_error"}}
            return 500, reply
        if response.status_code == 200 and isinstance(reply, dict):
            reply["service_tier"] = "batch"
        return response.status_code, reply

    # --- control ---
    async def _config_endpoint(self, request: Request) -> Response:
        if request.method == "POST":
            try:
                self.config.update(await request.json())
            except ValueError as e:
                return _error(400, str(e))
        return JSONResponse(dataclasses.asdict(self.config))

    async def _stats_endpoint(self, request: Request) -> Response:
        stats = {k: v for k, v in self.stats.items() if k != "submitted"}
        stats["submitted_twice"] = sum(1 for n in self.stats["submitted"].values() if n > 1)
        return JSONResponse(stats)


def _jsonl(lines: list[dict]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)
