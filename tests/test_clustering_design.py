"""Clustering by study design (screening.clustering): the design rules, by="study_design", and by="none".

Pure Python: no database, no network. The real-data tests use the Cohen
et al. (2006) drug-review collections from the shared data folder and are
skipped where it is absent.
"""

from __future__ import annotations

import pytest

from screening import clustering
from screening.clustering import classify_design, cluster_papers
from tests.clustering_support import check_shape, make_paper

# ---------------------------------------------------------------- by="none"


def test_none_is_one_cluster_all(triptans):
    result = cluster_papers(triptans, by="none", count=5)
    check_shape(result, len(triptans))
    assert result.clusters == [{"id": 0, "label": "all", "size": len(triptans)}]
    assert set(result.assignments) == {0}


def test_empty_input():
    for by in ("topic", "study_design", "none"):
        result = cluster_papers([], by=by)
        assert result.assignments == []
        assert result.clusters == []


def test_unknown_by_is_rejected():
    with pytest.raises(ValueError):
        cluster_papers([make_paper("x")], by="journal")


# -------------------------------------------------------- by="study_design"

DESIGN_CASES = [
    (
        "rct",
        make_paper(
            "Oral rizatriptan versus placebo for the acute treatment of migraine.",
            "In this multicentre, randomized, double-blind, placebo-controlled, "
            "parallel-group trial, 1268 outpatients treated a single moderate or "
            "severe attack with rizatriptan 10 mg or placebo. Headache relief at "
            "2 hours was 71% versus 35% (p < 0.001).",
        ),
    ),
    (
        "rct",
        make_paper(
            "Clonidine premedication in children undergoing tonsillectomy.",
            "Sixty children were randomised to oral clonidine or midazolam.",
        ),
    ),
    (
        "rct",
        make_paper(
            "Methylphenidate in adults with ADHD.",
            "We compared methylphenidate with placebo over six weeks.",
            ["Adult", "Double-Blind Method", "Humans", "Methylphenidate"],
        ),
    ),
    (
        "cohort",
        make_paper(
            "Long-term outcome of children with attention-deficit hyperactivity "
            "disorder: a prospective cohort study.",
            "We followed 412 children diagnosed between 1990 and 1995 for a "
            "median of 11 years and recorded substance use disorders.",
        ),
    ),
    (
        "cohort",
        make_paper(
            "Triptan use and cardiovascular events.",
            "A retrospective cohort of 63,575 migraineurs identified from a "
            "claims database was compared with matched non-users.",
            ["Cohort Studies", "Humans", "Migraine Disorders"],
        ),
    ),
    (
        "case_control",
        make_paper(
            "Antipsychotic drugs and the risk of venous thromboembolism: a "
            "nested case-control study.",
            "Cases were matched to up to four controls on age and sex.",
        ),
    ),
    (
        "cross_sectional",
        make_paper(
            "Prevalence of migraine among university students: a cross-sectional "
            "survey.",
            "A questionnaire was distributed to 2,100 students in 2004.",
        ),
    ),
    (
        "cross_sectional",
        make_paper(
            "Physicians' attitudes to stimulant prescribing.",
            "We surveyed 800 paediatricians by post; 61% responded.",
        ),
    ),
    (
        "review",
        make_paper(
            "Triptans for acute migraine: a meta-analysis of randomized "
            "controlled trials.",
            "We pooled 53 randomized, double-blind, placebo-controlled trials "
            "involving 24,089 patients.",
        ),
    ),
    (
        "review",
        make_paper(
            "Pharmacological management of cluster headache.",
            "This article reviews the evidence for acute and preventive "
            "treatments. Several randomized, double-blind trials have shown "
            "that subcutaneous sumatriptan and oxygen abort attacks.",
        ),
    ),
    (
        "review",
        make_paper(
            "Atypical antipsychotics in children.",
            "Use is increasing.",
            ["Antipsychotic Agents", "Child", "Humans", "Review"],
        ),
    ),
    (
        "case_report",
        make_paper(
            "Olanzapine-induced priapism: a case report and review of the literature.",
            "We describe a 34-year-old man who developed priapism after "
            "starting olanzapine; randomized trials have not reported this.",
        ),
    ),
    (
        "case_report",
        make_paper(
            "Myocardial infarction after subcutaneous sumatriptan.",
            "A 47-year-old woman presented with chest pain 30 minutes after "
            "her first injection of sumatriptan.",
        ),
    ),
    (
        "other",
        make_paper(
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
    about_rcts = make_paper(
        "Reporting quality of migraine trials.",
        "Adherence to CONSORT was assessed.",
        ["Randomized Controlled Trials as Topic", "Migraine Disorders"],
    )
    assert classify_design(about_rcts) == "other"
    # "non-randomized" is not an RCT.
    assert (
        classify_design(
            make_paper("Open study", "A non-randomized, prospective study of 40 adults.")
        )
        == "cohort"
    )
    # Keywords may also arrive as a "; "-separated string; case does not matter.
    assert classify_design(make_paper("x", "y", "CASE REPORTS; Humans")) == "case_report"  # type: ignore[arg-type]
    # Missing / None fields are tolerated.
    assert classify_design({"title": None}) == "other"
    assert classify_design({}) == "other"


def test_study_design_clusters(triptans):
    result = cluster_papers(triptans, by="study_design", count=2)  # count ignored
    check_shape(result, len(triptans))
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
    check_shape(result, 3)
    assert result.clusters == [
        {"id": 0, "label": "rct", "size": 2},
        {"id": 1, "label": "other", "size": 1},
    ]
    assert result.assignments == [0, 0, 1]
