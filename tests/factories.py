"""Rows for tests (factory-boy) and request data (papers)."""

from __future__ import annotations

import copy
import csv
from decimal import Decimal
from pathlib import Path

import factory

from crystallise.models import ApiKey
from indexer.models import IndexJob
from screening.models import Decision, Paper, ScreeningJob, ScreeningResult

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cohen_2006"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
# Criteria that every paper of papers() meets (the fake provider includes on matching words).
CRITERIA = {"inclusion": ["randomized trial", "migraine treatment"], "exclusion": ["children"]}


class ApiKeyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ApiKey

    name = factory.Sequence(lambda n: f"key-{n}")
    prefix = factory.Sequence(lambda n: f"cry_{n:08d}")
    key_hash = factory.Sequence(lambda n: f"{n:064x}")


def cohen_papers(name: str = "Triptans", limit: int | None = None) -> list[dict]:
    """Real PubMed records with reviewers' labels (label_abstract_screening)."""
    path = DATA / f"{name}.csv"
    if not path.exists():
        import pytest

        pytest.skip(f"shared dataset {path} is not available")
    out = []
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            out.append({
                "id": f"pmid:{row['pubmedID']}",
                "title": row["title"],
                "abstract": row["abstract"],
                "keywords": [k.strip() for k in row["keywords"].split(";") if k.strip()],
                "label": int(row["label_abstract_screening"]),
            })
            if limit and len(out) >= limit:
                break
    return out


def paper(pid: str, title: str, abstract: str = "", **extra) -> dict:
    return {"id": pid, "title": title, "abstract": abstract, **extra}


def papers(n: int) -> list[dict]:
    """n papers of a job's request, each a randomized trial of migraine treatment in adults."""
    return [paper(f"p{i}", f"Trial {i} of migraine treatment", "A randomized trial of migraine treatment in adults.")
            for i in range(n)]


class ScreeningJobFactory(factory.django.DjangoModelFactory):
    """A pending screening job of one owner, as the API stores it (no papers: add PaperFactory rows)."""

    class Meta:
        model = ScreeningJob

    model = "gpt-5-nano"
    llm_backend = "openai"
    openai_key_source = "server"
    owner = "f" * 16
    criteria = factory.LazyFunction(lambda: copy.deepcopy(CRITERIA))
    estimated_cost_usd = Decimal("0.002")
    cost_usd = Decimal("0.001")


class IndexJobFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = IndexJob

    model = "gpt-5-nano"
    llm_backend = "openai"
    openai_key_source = "server"
    owner = "f" * 16
    estimated_cost_usd = Decimal("0.003")
    cost_usd = Decimal("0.002")


class PaperFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Paper

    job = factory.SubFactory(ScreeningJobFactory)
    position = factory.Sequence(lambda n: n)
    paper_id = factory.LazyAttribute(lambda o: f"p{o.position}")
    title = factory.LazyAttribute(lambda o: f"Trial {o.position} of migraine treatment")
    abstract = "A randomized trial of migraine treatment in adults."


class ScreeningResultFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ScreeningResult

    paper = factory.SubFactory(PaperFactory)
    job = factory.SelfAttribute("paper.job")
    position = factory.SelfAttribute("paper.position")
    decision = Decision.EXCLUDE
    score = 0.0
