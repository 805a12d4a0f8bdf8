from __future__ import annotations

import csv
from pathlib import Path

import factory

from crystallise.models import ApiKey

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cohen_2006"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


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
