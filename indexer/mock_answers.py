"""The deterministic answer to an indexing prompt (mock backend and test fake server).

Import-safe without Django: the test fake server imports it directly.
"""

from __future__ import annotations

import re
from collections import Counter

from indexer.prompts import IndexedRecord

SCHEMA_NAME = IndexedRecord.__name__

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
