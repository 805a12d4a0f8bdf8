"""Offline, deterministic clustering of papers before screening.

A screening job buckets its papers before any LLM call (contract, "Screening
jobs"): by ``topic`` (text clustering labelled by top terms, :mod:`.topic`),
by ``study_design`` (a rule-based classifier, :mod:`.design`) or ``none``
(one cluster ``all``). Nothing here touches the network, the database or Django.

``cluster_papers`` returns a :class:`ClusterResult`: one cluster id per paper
(same order as the input) and the clusters themselves, ids dense ``0..k-1``,
ordered by descending size then label, never empty.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from screening.clustering.design import DESIGN_LABELS, classify_design
from screening.clustering.result import ALL_LABEL, ClusterResult, by_label, single_cluster
from screening.clustering.topic import cluster_by_topic

__all__ = [
    "ALL_LABEL",
    "BY_VALUES",
    "DESIGN_LABELS",
    "ClusterResult",
    "classify_design",
    "cluster_papers",
    "single_cluster",
]

BY_VALUES = ("topic", "study_design", "none")


def cluster_papers(
    papers: Iterable[Mapping], *, by: str = "topic", count: int | None = None
) -> ClusterResult:
    """Bucket ``papers`` (mappings with ``title``, ``abstract``, ``keywords``).

    ``by``: ``"topic"`` (TF-IDF + k-means, ``count`` clusters when given,
    clamped to ``[1, n]``, else a heuristic), ``"study_design"`` (see
    :func:`classify_design`; ``count`` ignored) or ``"none"`` (one cluster
    ``all``; ``count`` ignored). Raises ``ValueError`` for any other ``by``.
    """
    if by not in BY_VALUES:
        raise ValueError(f"by must be one of {', '.join(BY_VALUES)}; got {by!r}")
    if by == "study_design":
        # Streamed: one label per paper, never the papers themselves (100k abstracts).
        labels = [classify_design(p) for p in papers]
        return by_label(labels) if labels else ClusterResult([], [])
    papers = list(papers)
    if not papers:
        return ClusterResult([], [])
    if by == "none":
        return single_cluster(len(papers))
    return cluster_by_topic(papers, count)
