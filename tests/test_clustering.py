"""Tests for the offline clustering step (screening.clustering).

Pure Python: no database, no network. The real-data tests use the Cohen
et al. (2006) drug-review collections from the shared data folder and are
skipped where it is absent.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from screening import clustering
from screening.clustering import ClusterResult, classify_design, cluster_papers, topic

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cohen_2006"


def _load(name: str) -> list[dict]:
    path = DATA_DIR / f"{name}.csv"
    if not path.exists():
        pytest.skip(f"{path} not available")
    with path.open(encoding="utf-8", newline="") as fh:
        return [
            {
                "id": f"pmid:{row['pubmedID']}",
                "title": row["title"],
                "abstract": row["abstract"],
                "keywords": [
                    k.strip() for k in row["keywords"].split(";") if k.strip()
                ],
            }
            for row in csv.DictReader(fh)
        ]


@pytest.fixture(scope="module")
def adhd() -> list[dict]:
    return _load("ADHD")


@pytest.fixture(scope="module")
def triptans() -> list[dict]:
    return _load("Triptans")


def _check_shape(result: ClusterResult, n: int) -> None:
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


def _paper(title: str = "", abstract: str = "", keywords: list[str] | None = None):
    return {"title": title, "abstract": abstract, "keywords": keywords or []}


# ---------------------------------------------------------------- by="none"


def test_none_is_one_cluster_all(triptans):
    result = cluster_papers(triptans, by="none", count=5)
    _check_shape(result, len(triptans))
    assert result.clusters == [{"id": 0, "label": "all", "size": len(triptans)}]
    assert set(result.assignments) == {0}


def test_empty_input():
    for by in ("topic", "study_design", "none"):
        result = cluster_papers([], by=by)
        assert result.assignments == []
        assert result.clusters == []


def test_unknown_by_is_rejected():
    with pytest.raises(ValueError):
        cluster_papers([_paper("x")], by="journal")


# -------------------------------------------------------- by="study_design"

DESIGN_CASES = [
    (
        "rct",
        _paper(
            "Oral rizatriptan versus placebo for the acute treatment of migraine.",
            "In this multicentre, randomized, double-blind, placebo-controlled, "
            "parallel-group trial, 1268 outpatients treated a single moderate or "
            "severe attack with rizatriptan 10 mg or placebo. Headache relief at "
            "2 hours was 71% versus 35% (p < 0.001).",
        ),
    ),
    (
        "rct",
        _paper(
            "Clonidine premedication in children undergoing tonsillectomy.",
            "Sixty children were randomised to oral clonidine or midazolam.",
        ),
    ),
    (
        "rct",
        _paper(
            "Methylphenidate in adults with ADHD.",
            "We compared methylphenidate with placebo over six weeks.",
            ["Adult", "Double-Blind Method", "Humans", "Methylphenidate"],
        ),
    ),
    (
        "cohort",
        _paper(
            "Long-term outcome of children with attention-deficit hyperactivity "
            "disorder: a prospective cohort study.",
            "We followed 412 children diagnosed between 1990 and 1995 for a "
            "median of 11 years and recorded substance use disorders.",
        ),
    ),
    (
        "cohort",
        _paper(
            "Triptan use and cardiovascular events.",
            "A retrospective cohort of 63,575 migraineurs identified from a "
            "claims database was compared with matched non-users.",
            ["Cohort Studies", "Humans", "Migraine Disorders"],
        ),
    ),
    (
        "case_control",
        _paper(
            "Antipsychotic drugs and the risk of venous thromboembolism: a "
            "nested case-control study.",
            "Cases were matched to up to four controls on age and sex.",
        ),
    ),
    (
        "cross_sectional",
        _paper(
            "Prevalence of migraine among university students: a cross-sectional "
            "survey.",
            "A questionnaire was distributed to 2,100 students in 2004.",
        ),
    ),
    (
        "cross_sectional",
        _paper(
            "Physicians' attitudes to stimulant prescribing.",
            "We surveyed 800 paediatricians by post; 61% responded.",
        ),
    ),
    (
        "review",
        _paper(
            "Triptans for acute migraine: a meta-analysis of randomized "
            "controlled trials.",
            "We pooled 53 randomized, double-blind, placebo-controlled trials "
            "involving 24,089 patients.",
        ),
    ),
    (
        "review",
        _paper(
            "Pharmacological management of cluster headache.",
            "This article reviews the evidence for acute and preventive "
            "treatments. Several randomized, double-blind trials have shown "
            "that subcutaneous sumatriptan and oxygen abort attacks.",
        ),
    ),
    (
        "review",
        _paper(
            "Atypical antipsychotics in children.",
            "Use is increasing.",
            ["Antipsychotic Agents", "Child", "Humans", "Review"],
        ),
    ),
    (
        "case_report",
        _paper(
            "Olanzapine-induced priapism: a case report and review of the literature.",
            "We describe a 34-year-old man who developed priapism after "
            "starting olanzapine; randomized trials have not reported this.",
        ),
    ),
    (
        "case_report",
        _paper(
            "Myocardial infarction after subcutaneous sumatriptan.",
            "A 47-year-old woman presented with chest pain 30 minutes after "
            "her first injection of sumatriptan.",
        ),
    ),
    (
        "other",
        _paper(
            "Serotonin receptor binding profile of zolmitriptan in vitro.",
            "Affinities were measured in cloned human 5-HT1B and 5-HT1D receptors.",
        ),
    ),
]


@pytest.mark.parametrize(
    ("expected", "paper"),
    DESIGN_CASES,
    ids=[f"{label}-{i}" for i, (label, _) in enumerate(DESIGN_CASES)],
)
def test_classify_design(expected, paper):
    assert classify_design(paper) == expected


def test_design_precedence_details():
    # "... as Topic" headings describe what a paper is about, not its design.
    about_rcts = _paper(
        "Reporting quality of migraine trials.",
        "Adherence to CONSORT was assessed.",
        ["Randomized Controlled Trials as Topic", "Migraine Disorders"],
    )
    assert classify_design(about_rcts) == "other"
    # "non-randomized" is not an RCT.
    assert (
        classify_design(
            _paper("Open study", "A non-randomized, prospective study of 40 adults.")
        )
        == "cohort"
    )
    # Keywords may also arrive as a "; "-separated string; case does not matter.
    assert classify_design(_paper("x", "y", "CASE REPORTS; Humans")) == "case_report"  # type: ignore[arg-type]
    # Missing / None fields are tolerated.
    assert classify_design({"title": None}) == "other"
    assert classify_design({}) == "other"


def test_study_design_clusters(triptans):
    result = cluster_papers(triptans, by="study_design", count=2)  # count ignored
    _check_shape(result, len(triptans))
    labels = [c["label"] for c in result.clusters]
    assert set(labels) <= set(clustering.DESIGN_LABELS)
    assert len(labels) > 2
    by_label = {c["label"]: c for c in result.clusters}
    # The Triptans collection is dominated by trials: rct is the largest
    # bucket (285 of 671 here, ahead of "other") and well over a third.
    assert result.clusters[0]["label"] == "rct"
    assert by_label["rct"]["size"] >= 0.35 * len(triptans)
    # The dataset's keywords hold MeSH headings, not publication types: of
    # the records indexed "Randomized Controlled Trials as Topic", about half
    # are trials themselves (the rest reviews / commentaries).
    rct_topic = [
        i
        for i, p in enumerate(triptans)
        if any("Randomized Controlled Trial" in k for k in p["keywords"])
    ]
    rct_id = by_label["rct"]["id"]
    in_rct = sum(result.assignments[i] == rct_id for i in rct_topic)
    assert in_rct >= 0.3 * len(rct_topic)
    # "Double-Blind Method" is a near-certain trial marker.
    double_blind = [
        i for i, p in enumerate(triptans) if "Double-Blind Method" in p["keywords"]
    ]
    assert len(double_blind) > 100
    in_rct = sum(result.assignments[i] == rct_id for i in double_blind)
    assert in_rct >= 0.95 * len(double_blind)


def test_study_design_only_nonempty_clusters():
    papers = [DESIGN_CASES[0][1], DESIGN_CASES[1][1], DESIGN_CASES[-1][1]]
    result = cluster_papers(papers, by="study_design")
    _check_shape(result, 3)
    assert result.clusters == [
        {"id": 0, "label": "rct", "size": 2},
        {"id": 1, "label": "other", "size": 1},
    ]
    assert result.assignments == [0, 0, 1]


# ---------------------------------------------------------------- by="topic"

TOPIC_TERMS = re.compile(r"migrain|triptan|headache", re.IGNORECASE)


def test_topic_separates_adhd_from_triptans(adhd, triptans):
    papers = adhd + triptans
    result = cluster_papers(papers, by="topic", count=2)
    _check_shape(result, len(papers))
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
    _check_shape(result, len(triptans))
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
    _check_shape(result, len(adhd))
    assert len(result.clusters) == count


def test_topic_count_clamped():
    papers = [
        _paper("Sumatriptan for migraine", "Sumatriptan relieved migraine headache."),
        _paper("Clonidine for ADHD", "Clonidine improved hyperactivity in children."),
        _paper("Rizatriptan for migraine", "Rizatriptan relieved migraine pain."),
    ]
    result = cluster_papers(papers, by="topic", count=50)
    _check_shape(result, 3)
    assert len(result.clusters) == 3
    result = cluster_papers(papers, by="topic", count=0)
    _check_shape(result, 3)
    assert len(result.clusters) == 1
    # Fewer than four papers: one cluster by default, labelled by its terms.
    result = cluster_papers(papers, by="topic")
    _check_shape(result, 3)
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
    _check_shape(first, len(papers))
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
    papers = [_paper(f"Report {i}", f"{core} nausea") for i in range(4)] + [
        _paper(f"Report {i}", f"{core} photophobia") for i in range(4, 8)
    ]
    result = cluster_papers(papers, by="topic", count=2)
    _check_shape(result, 8)
    assert [c["label"] for c in result.clusters] == [
        "headache, migraine, sumatriptan",
        "headache, migraine, sumatriptan (2)",
    ]
    assert len(set(result.assignments[:4])) == 1
    assert len(set(result.assignments[4:])) == 1
    assert result.assignments[0] != result.assignments[4]


def test_topic_papers_without_text_still_assigned(triptans):
    papers = triptans[:200] + [_paper(), _paper("", "", []), {"title": None}]
    result = cluster_papers(papers, by="topic", count=4)
    _check_shape(result, len(papers))
    assert len(result.clusters) <= 4


def test_topic_falls_back_to_all_without_text():
    papers = [
        _paper(),
        _paper("", "  "),
        {"title": None, "abstract": None, "keywords": []},
    ]
    result = cluster_papers(papers, by="topic", count=3)
    assert result.clusters == [{"id": 0, "label": "all", "size": 3}]
    assert result.assignments == [0, 0, 0]
    # Text, but nothing left once stop words and numbers are removed.
    papers = [_paper("The", "and of 2004"), _paper("It was", "12 mg"), _paper("A", "")]
    result = cluster_papers(papers, by="topic", count=2)
    assert result.clusters == [{"id": 0, "label": "all", "size": 3}]
