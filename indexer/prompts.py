"""AutoIndexer: the prompt and its structured answer.

Import-safe without Django, like `indexer.mock_answers`, which answers this
prompt offline. Records that cannot be indexed are found before any prompt:
`indexer.precheck`.
"""

from __future__ import annotations

import functools

from pydantic import BaseModel, create_model

FIELDS = ("population", "intervention", "comparator", "outcomes", "study_design", "sample_size", "keywords")


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
