"""Helpers shared by the clustering tests: paper records and the invariants every ClusterResult satisfies.

The real-data fixtures `adhd` and `triptans` live in tests/conftest.py.
"""

from __future__ import annotations

from screening.clustering import ClusterResult


def check_shape(result: ClusterResult, n: int) -> None:
    """Invariants every result must satisfy."""
    assert len(result.assignments) == n
    ids = [c["id"] for c in result.clusters]
    assert ids == list(range(len(result.clusters)))
    assert all(c["size"] > 0 for c in result.clusters)
    assert sum(c["size"] for c in result.clusters) == n
    for c in result.clusters:
        assert result.assignments.count(c["id"]) == c["size"]
    keys = [(-c["size"], c["label"]) for c in result.clusters]
    assert keys == sorted(keys)
    labels = [c["label"] for c in result.clusters]
    assert len(set(labels)) == len(labels)
    assert all(isinstance(c["label"], str) and c["label"] for c in result.clusters)


def make_paper(title: str = "", abstract: str = "", keywords: list[str] | None = None):
    return {"title": title, "abstract": abstract, "keywords": keywords or []}
