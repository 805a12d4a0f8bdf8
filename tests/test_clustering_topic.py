"""Clustering by topic (screening.clustering, by="topic"): separation, counts, labels, determinism, fallbacks.

Pure Python: no database, no network. The real-data tests use the Cohen
et al. (2006) drug-review collections from the shared data folder and are
skipped where it is absent.
"""

from __future__ import annotations

import re

import pytest

from screening.clustering import cluster_papers, topic
from tests.clustering_support import check_shape, make_paper

# ---------------------------------------------------------------- by="topic"

TOPIC_TERMS = re.compile(r"migrain|triptan|headache", re.IGNORECASE)


def test_topic_separates_adhd_from_triptans(adhd, triptans):
    papers = adhd + triptans
    result = cluster_papers(papers, by="topic", count=2)
    check_shape(result, len(papers))
    assert len(result.clusters) == 2
    migraine = [c for c in result.clusters if TOPIC_TERMS.search(c["label"])]
    assert len(migraine) == 1, result.clusters
    migraine_id = migraine[0]["id"]
    other = next(c for c in result.clusters if c["id"] != migraine_id)
    assert not TOPIC_TERMS.search(other["label"])

    trip = range(len(adhd), len(papers))
    in_migraine = [i for i in trip if result.assignments[i] == migraine_id]
    # The Triptans search also returned off-topic papers (gastric motility,
    # SSRIs, multiple sclerosis, ...): still most records land together, and
    # nearly all that are actually about migraine or triptans.
    assert len(in_migraine) >= 0.8 * len(triptans)
    on_topic = [
        i
        for i in trip
        if TOPIC_TERMS.search(papers[i]["title"] + " " + papers[i]["abstract"])
    ]
    assert sum(result.assignments[i] == migraine_id for i in on_topic) >= 0.88 * len(
        on_topic
    )
    # ...and the migraine cluster is almost pure Triptans.
    adhd_in_migraine = sum(
        result.assignments[i] == migraine_id for i in range(len(adhd))
    )
    assert adhd_in_migraine <= 0.02 * len(adhd)


def test_topic_default_count_and_labels(triptans):
    result = cluster_papers(triptans)  # by="topic", heuristic k
    check_shape(result, len(triptans))
    expected_k = min(12, max(2, round((len(triptans) / 5) ** 0.5)))
    assert len(result.clusters) == expected_k
    for c in result.clusters:
        terms = c["label"].split(", ")
        assert 1 <= len(terms) <= 3
        assert all(re.fullmatch(r"[^\W\d_][\w]+( \(\d+\))?", t) for t in terms), c
    # Labels name what the sub-topics are about.
    assert any("cluster" in c["label"] for c in result.clusters)


@pytest.mark.parametrize("count", [1, 3, 7, 25])
def test_topic_count_respected(adhd, count):
    result = cluster_papers(adhd, by="topic", count=count)
    check_shape(result, len(adhd))
    assert len(result.clusters) == count


def test_topic_count_clamped():
    papers = [
        make_paper("Sumatriptan for migraine", "Sumatriptan relieved migraine headache."),
        make_paper("Clonidine for ADHD", "Clonidine improved hyperactivity in children."),
        make_paper("Rizatriptan for migraine", "Rizatriptan relieved migraine pain."),
    ]
    result = cluster_papers(papers, by="topic", count=50)
    check_shape(result, 3)
    assert len(result.clusters) == 3
    result = cluster_papers(papers, by="topic", count=0)
    check_shape(result, 3)
    assert len(result.clusters) == 1
    # Fewer than four papers: one cluster by default, labelled by its terms.
    result = cluster_papers(papers, by="topic")
    check_shape(result, 3)
    assert len(result.clusters) == 1
    assert "migraine" in result.clusters[0]["label"]


def test_topic_is_deterministic(adhd, triptans):
    papers = adhd + triptans
    first = cluster_papers(papers, by="topic")
    second = cluster_papers(papers, by="topic")
    assert first == second
    assert cluster_papers(papers, by="topic", count=5) == cluster_papers(
        papers, by="topic", count=5
    )


def test_topic_minibatch_path(adhd, triptans, monkeypatch):
    """The large-input path (MiniBatchKMeans) is deterministic and sane too."""
    monkeypatch.setattr(topic, "MINIBATCH_THRESHOLD", 100)
    papers = adhd + triptans
    first = cluster_papers(papers, by="topic", count=2)
    check_shape(first, len(papers))
    assert first == cluster_papers(papers, by="topic", count=2)
    migraine = [c for c in first.clusters if TOPIC_TERMS.search(c["label"])]
    assert len(migraine) == 1
    trip_in = sum(
        first.assignments[i] == migraine[0]["id"] for i in range(len(adhd), len(papers))
    )
    assert trip_in >= 0.7 * len(triptans)


def test_topic_duplicate_labels_are_made_unique():
    # Two clear groups (nausea vs photophobia) whose centroids share the same
    # three heaviest terms: the second label gets " (2)".
    core = " ".join(["migraine sumatriptan headache"] * 10)
    papers = [make_paper(f"Report {i}", f"{core} nausea") for i in range(4)] + [
        make_paper(f"Report {i}", f"{core} photophobia") for i in range(4, 8)
    ]
    result = cluster_papers(papers, by="topic", count=2)
    check_shape(result, 8)
    assert [c["label"] for c in result.clusters] == [
        "headache, migraine, sumatriptan",
        "headache, migraine, sumatriptan (2)",
    ]
    assert len(set(result.assignments[:4])) == 1
    assert len(set(result.assignments[4:])) == 1
    assert result.assignments[0] != result.assignments[4]


def test_topic_papers_without_text_still_assigned(triptans):
    papers = triptans[:200] + [make_paper(), make_paper("", "", []), {"title": None}]
    result = cluster_papers(papers, by="topic", count=4)
    check_shape(result, len(papers))
    assert len(result.clusters) <= 4


def test_topic_falls_back_to_all_without_text():
    papers = [
        make_paper(),
        make_paper("", "  "),
        {"title": None, "abstract": None, "keywords": []},
    ]
    result = cluster_papers(papers, by="topic", count=3)
    assert result.clusters == [{"id": 0, "label": "all", "size": 3}]
    assert result.assignments == [0, 0, 0]
    # Text, but nothing left once stop words and numbers are removed.
    papers = [make_paper("The", "and of 2004"), make_paper("It was", "12 mg"), make_paper("A", "")]
    result = cluster_papers(papers, by="topic", count=2)
    assert result.clusters == [{"id": 0, "label": "all", "size": 3}]
