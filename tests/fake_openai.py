"""An OpenAI-compatible fake server over real HTTP, for tests and benchmarks.

The official `openai` SDK talks to it as to api.openai.com: real sockets,
status codes and headers (x-request-id, retry-after, x-ratelimit-*).
`POST /v1/chat/completions` answers with schema-conforming structured output,
counts tokens with o200k_base (offline), and simulates prompt caching, auth,
rate limits, latency and seeded faults.

In-process (tests)::

    with FakeOpenAI(latency=0.05, rpm=600, seed=1) as fake:
        client = openai.AsyncOpenAI(api_key="sk-test", base_url=fake.base_url, max_retries=0)
        fake.config.p_500 = 0.2             # any FakeConfig field; applies to the next request
        fake.config.script = ["429", "ok"]  # one entry consumed per request
        fake.stats["status"]["200"], fake.count, fake.requests[-1]["body"]
        fake.reset()                        # stats, log, prompt cache, bucket, RNG

Separate process (benchmarks)::

    python -m tests.fake_openai --port 0 --latency 0.3 --rpm 600 --seed 1
    # prints "READY http://127.0.0.1:PORT/v1"; control endpoints: GET /_fake/stats,
    # GET|POST /_fake/config (JSON merge), POST /_fake/reset, GET /_fake/requests?last=N[&brief=1]

Per request, in order: auth (valid_keys, revoked_keys) -> fail_after -> rate
limit -> fault (next `script` entry, else one seeded draw over the p_*) ->
latency -> answer. 401s and 429s answer at once, as OpenAI's do. Faults: ok,
401, 429, 500, hang, malformed, schema_invalid. Rate limits (`rpm`, `tpm`:
requests and tokens per minute, with the x-ratelimit-* headers of each limit
set) are in tests.fake_ratelimit. `accepted` counts requests
admitted past auth, fail_after and the rate limit, on arrival (so fail_after
is exact under concurrency). Stats: requests, accepted, in_flight,
max_in_flight, prompt_tokens, cached_tokens, completion_tokens,
reasoning_tokens, rate_tokens (counted against `tpm` by admitted requests), internal_errors, and counters status ({"200": n}, string
keys as in the JSON), keys_seen, faults.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import importlib.resources
import importlib.util
import json
import logging
import math
import random
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Self

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fake_batches import FakeBatches
from tests.fake_content import (  # noqa: F401  (re-exported: tests import them from here)
    FAULTS,
    PLAIN_TEXT,
    FakeConfig,
    PromptCache,
    add_config_arguments,
    default_responder,
    get_encoding,
    prompt_token_ids,
    schema_value,
)
from tests.fake_ratelimit import Buckets, duration, output_budget

log = logging.getLogger(__name__)

# --- server -----------------------------------------------------------------------


def _error(status: int, message: str, kind: str, code: str | None, headers: dict) -> Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return JSONResponse(body, status, headers=headers)


_COUNTS = ("requests", "accepted", "in_flight", "max_in_flight", "prompt_tokens", "cached_tokens",
           "completion_tokens", "reasoning_tokens", "rate_tokens", "internal_errors")


class _Server(uvicorn.Server):
    """uvicorn, reporting when it listens and checking should_exit every 10 ms (not 100)."""

    def __init__(self, config: uvicorn.Config, on_ready: Callable[[_Server], None]) -> None:
        super().__init__(config)
        self.on_ready = on_ready

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.on_ready(self)

    async def main_loop(self) -> None:
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864_000
            await asyncio.sleep(0.01)


class FakeOpenAI:
    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, **config: Any) -> None:
        self.host, self.port = host, port
        self.config = FakeConfig(**config)
        self._lock = threading.Lock()  # stats and log are read from other threads
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.batches = FakeBatches(self)  # files and batches: tests/fake_batches.py
        self.reset()
        self.app = Starlette(routes=[
            *self.batches.routes(),
            Route("/v1/chat/completions", self._chat, methods=["POST"]),
            Route("/chat/completions", self._chat, methods=["POST"]),
            Route("/_fake/stats", self._stats_endpoint),
            Route("/_fake/config", self._config_endpoint, methods=["GET", "POST"]),
            Route("/_fake/reset", self._reset_endpoint, methods=["POST"]),
            Route("/_fake/requests", self._requests_endpoint),
        ])

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {k: dict(v) if isinstance(v, dict) else v for k, v in self._stats.items()}

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Oldest first: path, key, status (None while in flight), fault, request_id, body."""
        with self._lock:
            return list(self._log)

    @property
    def count(self) -> int:
        return self._stats["requests"]

    def reset(self) -> None:
        seed = self.config.seed
        with self._lock:
            self._stats: dict[str, Any] = dict.fromkeys(_COUNTS, 0)
            self._stats.update({k: collections.Counter() for k in ("status", "keys_seen", "faults")})
            self._log: collections.deque[dict] = collections.deque(maxlen=self.config.log_size)
        self._rng = random.Random(seed)
        self._jitter_rng = random.Random(None if seed is None else f"jitter-{seed}")
        self._limits = Buckets()
        self._cache = PromptCache()
        self.batches.reset()

    # --- running ---

    def _uvicorn(self, on_ready: Callable[[], None]) -> _Server:
        def ready(server: _Server) -> None:
            self.port = server.servers[0].sockets[0].getsockname()[1]
            on_ready()

        has = importlib.util.find_spec
        config = uvicorn.Config(
            self.app, host=self.host, port=self.port, log_level="warning", access_log=False,
            lifespan="off", ws="none", timeout_graceful_shutdown=0.5,
            loop="uvloop" if has("uvloop") else "asyncio", http="httptools" if has("httptools") else "h11",
        )
        get_encoding()  # load the vocabulary now, not inside the first request
        return _Server(config, ready)

    def start(self) -> Self:
        """Serve from a background thread (where uvicorn installs no signal handlers)."""
        started = threading.Event()
        self._server = self._uvicorn(started.set)
        self._thread = threading.Thread(target=self._server.run, name="fake-openai", daemon=True)
        self._thread.start()
        while not started.wait(0.01):
            if not self._thread.is_alive():
                raise RuntimeError(f"fake OpenAI server failed to start on {self.host}:{self.port}")
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
            self._server = self._thread = None

    def serve_forever(self) -> None:
        """Serve in this (main) thread until SIGINT/SIGTERM; print READY once listening."""
        self._uvicorn(lambda: print(f"READY {self.base_url}", flush=True)).run()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- control endpoints ---

    async def _stats_endpoint(self, request: Request) -> Response:
        return JSONResponse(self.stats)

    async def _config_endpoint(self, request: Request) -> Response:
        if request.method == "POST":
            changes = await request.json()
            try:
                if "responder" in changes:
                    raise ValueError("responder cannot be set over HTTP")
                self.config.update(changes)
            except ValueError as e:
                return _error(400, str(e), "invalid_request_error", None, {})
        return JSONResponse(self.config.as_json())

    async def _reset_endpoint(self, request: Request) -> Response:
        self.reset()
        return JSONResponse({"ok": True})

    async def _requests_endpoint(self, request: Request) -> Response:
        last = int(request.query_params.get("last", 100))
        entries = self.requests[-last:] if last > 0 else []
        if request.query_params.get("brief"):  # without bodies: arrival time, status and the body's prompt_cache_key
            entries = [{"t": e["t"], "status": e["status"], "fault": e["fault"],
                        "cache_key": (e["body"] or {}).get("prompt_cache_key") if isinstance(e["body"], dict) else None}
                       for e in entries]
        return JSONResponse(entries)

    # --- chat completions ---

    async def _chat(self, request: Request) -> Response:
        started = time.monotonic()
        headers = {"x-request-id": f"req_{uuid.uuid4().hex}", "openai-version": "2020-10-01"}
        auth = request.headers.get("authorization", "")
        key = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
        entry = {"path": request.url.path, "key": key, "status": None, "fault": None, "t": time.time(),
                 "request_id": headers["x-request-id"], "body": body,
                 "content_type": request.headers.get("content-type")}
        with self._lock:
            stats = self._stats  # this request's counters stay on one dict across a reset()
            self._log.append(entry)
            stats["requests"] += 1
            stats["in_flight"] += 1
            stats["max_in_flight"] = max(stats["max_in_flight"], stats["in_flight"])
            if key:
                stats["keys_seen"][key] += 1
        try:
            try:
                response = await self._respond(body, key, entry, headers, stats)
            except Exception as e:
                # Loud and counted: a crash in the fake must not pass for a flaky upstream.
                log.exception("fake OpenAI server crashed")
                with self._lock:
                    stats["internal_errors"] += 1
                response = _error(500, f"fake server crashed: {e!r}", "server_error", None, headers)
            entry["status"] = response.status_code
            response.headers["openai-processing-ms"] = str(int((time.monotonic() - started) * 1000))
            with self._lock:
                stats["status"][str(response.status_code)] += 1
            return response
        finally:
            with self._lock:
                stats["in_flight"] -= 1

    async def _respond(self, body: Any, key: str, entry: dict, headers: dict, stats: dict) -> Response:
        cfg = self.config
        if not key or key in cfg.revoked_keys or (cfg.valid_keys is not None and key not in cfg.valid_keys):
            return self._status_error(401, key, headers, 0)
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body.get("model"):
            msg = "We could not parse your request: a JSON body with 'model' and 'messages' is required."
            return _error(400, msg, "invalid_request_error", None, headers)
        if cfg.fail_after is not None and stats["accepted"] >= cfg.fail_after:
            entry["fault"] = "fail_after"
            return self._status_error(cfg.fail_after_status, key, headers, cfg.fault_retry_after)
        ids = None
        if cfg.rpm is not None or cfg.tpm is not None:
            ids = prompt_token_ids(body["messages"])
            charged = len(ids) + output_budget(body)
            if refusal := self._limits.admit(cfg, headers, charged, body["model"]):
                return self._status_error(429, key, headers, refusal.wait, message=refusal.message)
            with self._lock:
                stats["rate_tokens"] += charged

        if body.get("service_tier") == "flex" and cfg.flex_unavailable > 0:
            cfg.flex_unavailable -= 1
            entry["fault"] = "flex_unavailable"
            return _error(429, "Resource Unavailable: flex processing has no capacity for this request right now. "
                          "Retry later, or send it in the default tier.", "invalid_request_error",
                          "resource_unavailable", {**headers, "retry-after": "0.01"})
        fault = entry["fault"] = cfg.script.pop(0) if cfg.script else self._draw_fault(cfg)
        with self._lock:
            stats["accepted"] += 1
            stats["faults"][fault] += 1
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r} in script; known: {FAULTS}")
        if fault in ("401", "429"):
            return self._status_error(int(fault), key, headers, cfg.fault_retry_after)

        ids = prompt_token_ids(body["messages"]) if ids is None else ids
        prefixes = self._cache.prefixes(cfg, body["model"], ids)
        # Looked up on arrival, remembered on completion: as with OpenAI,
        # concurrent twins of a new prompt all miss the cache.
        cached = self._cache.longest(prefixes)
        delay = cfg.latency + (self._jitter_rng.uniform(-cfg.jitter, cfg.jitter) if cfg.jitter else 0.0)
        if delay > 0:
            await asyncio.sleep(delay)
        if fault == "hang":
            await asyncio.sleep(cfg.hang_seconds)
        if fault == "500":
            return self._status_error(500, key, headers, 0)

        content = self._content(cfg, body, fault)
        completion_tokens = len(get_encoding().encode(content, disallowed_special=())) + cfg.reasoning_tokens
        self._cache.remember(cfg, prefixes)
        with self._lock:
            stats["prompt_tokens"] += len(ids)
            stats["cached_tokens"] += cached
            stats["completion_tokens"] += completion_tokens
            stats["reasoning_tokens"] += cfg.reasoning_tokens
        message = {"role": "assistant", "content": content, "refusal": None, "annotations": []}
        completion = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion",
            "created": int(time.time()), "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None, "message": message}],
            "usage": {
                "prompt_tokens": len(ids), "completion_tokens": completion_tokens,
                "total_tokens": len(ids) + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": cfg.reasoning_tokens, "audio_tokens": 0},
            },
            "service_tier": "flex" if body.get("service_tier") == "flex" else "default", "system_fingerprint": None,
        }
        data = json.dumps(completion).encode()
        if fault == "malformed":  # as when a proxy cuts the body short
            data = data[: len(data) // 2]
        return Response(data, 200, headers=headers, media_type="application/json")

    def _draw_fault(self, cfg: FakeConfig) -> str:
        r = self._rng.random()  # exactly one draw per request keeps seeded runs reproducible
        for name in ("500", "429", "hang", "malformed", "schema_invalid", "401"):
            r -= getattr(cfg, f"p_{name}")
            if r < 0:
                return name
        return "ok"

    def _content(self, cfg: FakeConfig, body: dict, fault: str) -> str:
        if fault == "schema_invalid":
            return json.dumps({"unexpected": True})
        fmt = body.get("response_format") or {}
        answer = (cfg.responder or default_responder)(body)
        if answer is None and fmt.get("type") == "json_schema":
            answer = schema_value((fmt.get("json_schema") or {}).get("schema") or {})
        elif answer is None:
            answer = {} if fmt.get("type") == "json_object" else PLAIN_TEXT
        return answer if isinstance(answer, str) else json.dumps(answer)

    def _status_error(self, status: int, key: str, headers: dict, retry_after: float, message: str = "") -> Response:
        if status == 401:
            msg = (f"Incorrect API key provided: {key[:3]}...{key[-4:]}. You can find your API key at "
                   "https://platform.openai.com/account/api-keys.") if key else "You didn't provide an API key."
            return _error(401, msg, "invalid_request_error", "invalid_api_key", headers)
        if status == 429:
            retry_after = max(retry_after, 0.001)
            headers["retry-after"] = f"{retry_after:.3f}".rstrip("0").rstrip(".")
            headers["retry-after-ms"] = str(math.ceil(retry_after * 1000))
            msg = message or f"Rate limit reached. Please try again in {duration(retry_after)}."
            return _error(429, msg, "requests", "rate_limit_exceeded", headers)
        if status >= 500:
            msg = "The server had an error while processing your request. Sorry about that!"
            return _error(status, msg, "server_error", None, headers)
        return _error(status, f"Fake failure with status {status}.", "invalid_request_error", None, headers)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fake_openai", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    add_config_arguments(parser)
    args = vars(parser.parse_args(argv))
    logging.basicConfig(level=logging.WARNING)
    FakeOpenAI(host=args.pop("host"), port=args.pop("port"), **args).serve_forever()


if __name__ == "__main__":
    main()
