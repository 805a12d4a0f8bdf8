"""AutoIndexer: abstract cleaning and prechecks, the prompt and its structured answer.

Records that cannot be indexed (no abstract, too short, markup or binary
debris) are found here before any LLM call, so they cost no tokens.

Import-safe without Django: the test fake server uses `mock_answer`.
"""

from __future__ import annotations

import functools
import html
import re
import unicodedata
from collections import Counter

from pydantic import BaseModel, create_model

FIELDS = ("population", "intervention", "comparator", "outcomes", "study_design", "sample_size", "keywords")
MIN_WORDS = 20
# Below this share of letters among the visible characters the text is debris, not prose.
MIN_LETTER_SHARE = 0.5


class Status:
    OK = "ok"
    MISSING_ABSTRACT = "missing_abstract"
    TOO_SHORT = "too_short"
    MALFORMED = "malformed"
    LLM_ERROR = "llm_error"

    ALL = (OK, MISSING_ABSTRACT, TOO_SHORT, MALFORMED, LLM_ERROR)


class IndexedRecord(BaseModel):
    population: str
    intervention: str
    comparator: str
    outcomes: list[str]
    study_design: str
    sample_size: int | None
    keywords: list[str]


@functools.cache
def schema_for(fields: tuple[str, ...]) -> type[BaseModel]:
    """`IndexedRecord` restricted to `fields` (fewer output tokens); same schema name for the mock."""
    if set(fields) == set(FIELDS):
        return IndexedRecord
    wanted = {name: (IndexedRecord.model_fields[name].annotation, ...) for name in FIELDS if name in fields}
    return create_model("IndexedRecord", **wanted)


_TAG = re.compile(r"<[^>]{0,2000}>")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffd\ufeff]")


def clean_abstract(text: str) -> str:
    """Strip HTML tags and entities, control characters and replacement characters; collapse spaces."""
    text = _TAG.sub(" ", text)
    text = html.unescape(text)
    text = _TAG.sub(" ", text)  # tags that were entity-escaped
    text = _CONTROL.sub(" ", text)
    text = "".join(" " if unicodedata.category(ch) in ("Cc", "Cf", "Co", "Cs") else ch for ch in text)
    return " ".join(text.split())


def precheck(abstract: str | None) -> tuple[str, str | None, str]:
    """(indexing_status, extraction_error, cleaned abstract) before any LLM call."""
    if abstract is None or not str(abstract).strip():
        return Status.MISSING_ABSTRACT, "The record has no abstract.", ""
    cleaned = clean_abstract(str(abstract))
    visible = [ch for ch in cleaned if not ch.isspace()]
    letters = sum(ch.isalpha() for ch in visible)
    if not visible or letters / len(visible) < MIN_LETTER_SHARE:
        return (Status.MALFORMED, "The abstract is markup or binary debris with no readable text left after cleaning.",
                cleaned)
    words = sum(1 for w in cleaned.split() if any(ch.isalpha() for ch in w))
    if words < MIN_WORDS:
        return Status.TOO_SHORT, f"The abstract has {words} words after cleaning; at least {MIN_WORDS} are needed.", cleaned
    return Status.OK, None, cleaned


INSTRUCTIONS = """You index study abstracts for a systematic review. From the title and abstract only, extract:
population (who was studied), intervention, comparator (or "none"), outcomes (list of measured outcomes),
study_design (e.g. randomized controlled trial, cohort, case-control, cross-sectional, review, case report),
sample_size (number of participants, or null if not stated), keywords (3 to 8 index terms).
Be terse: each text field at most 20 words. Use "not reported" when the abstract does not say."""


def messages_for(title: str, abstract: str) -> list[dict]:
    return [
        {"role": "system", "content": INSTRUCTIONS},
        {"role": "user", "content": f"Title: {title.strip() or '(none)'}\nAbstract: {abstract}"},
    ]


# --- the deterministic answer (mock backend and test fake) ---------------------

_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_SAMPLE = re.compile(r"\b(\d[\d,]*)\s+(?:\w+\s+){0,2}(?:patients|participants|subjects|adults|children|women|men|"
                     r"volunteers|individuals|migraineurs|people)\b", re.IGNORECASE)
_DESIGNS = (
    ("meta-analysis", "meta-analysis"), ("systematic review", "systematic review"),
    ("randomi", "randomized controlled trial"), ("cohort", "cohort study"), ("case-control", "case-control study"),
    ("cross-sectional", "cross-sectional study"), ("case report", "case report"), ("review", "review"),
)
_POPULATION = ("patients", "participants", "subjects", "adults", "children", "women", "men", "volunteers")
_INTERVENTION = ("treated", "received", "randomi", "administered", "given", "dose", "mg")
_OUTCOME = ("outcome", "end point", "endpoint", "efficacy", "response", "relief", "measured")
_WORD = re.compile(r"[a-z][a-z-]{4,}")
_STOP = frozenset("""about after again against among because before being between could during their there
these those through under until where which while would should other study studies patients results
conclusions methods background objective using within without compared placebo treatment""".split())


def _sentence_with(sentences: list[str], needles: tuple[str, ...]) -> str:
    pattern = re.compile(r"\b(?:" + "|".join(map(re.escape, needles)) + ")", re.IGNORECASE)
    for sentence in sentences[1:] or sentences:  # skip the title unless it is all there is
        if pattern.search(sentence):
            return sentence[:160]
    return "not reported"


def mock_answer(messages: list[dict]) -> dict:
    """Keyword heuristics: the first sentence naming people, a treatment and an outcome;
    the design from telltale words; the largest "N patients" as the sample size."""
    user = next((m.get("content") or "" for m in messages if m.get("role") == "user"), "")
    title, _, abstract = user.partition("\nAbstract: ")
    title = title.removeprefix("Title: ")
    text = f"{title}. {abstract}"
    sentences = [s.strip() for s in _SENTENCE.split(text) if s.strip()]
    low = text.lower()
    sizes = [int(m.replace(",", "")) for m in _SAMPLE.findall(text) if m.replace(",", "").isdigit()]
    words = Counter(w for w in _WORD.findall(low) if w not in _STOP)
    return {
        "population": _sentence_with(sentences, _POPULATION),
        "intervention": _sentence_with(sentences, _INTERVENTION),
        "comparator": "placebo" if "placebo" in low else "none",
        "outcomes": [s for s in [_sentence_with(sentences, _OUTCOME)] if s != "not reported"],
        "study_design": next((label for needle, label in _DESIGNS if needle in low), "not reported"),
        "sample_size": max(sizes) if sizes else None,
        "keywords": [w for w, _ in words.most_common(5)],
    }
