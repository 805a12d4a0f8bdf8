"""manage.py evaluate_screening: offline evaluation of a labelled file on the mock backend (the CI smoke run)."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from scipy.stats import beta
from sklearn.metrics import confusion_matrix

from screening.models import HumanReview, ScreeningJob, ScreeningResult
from tests.factories import DATA

pytestmark = pytest.mark.django_db(transaction=True)

CRITERIA = {
    "Triptans": {"research_question": "Are triptans effective for acute migraine?",
                 "inclusion": ["triptan treatment of migraine", "randomized controlled trial"],
                 "exclusion": ["animal experiments in rats"]},
    "ADHD": {"research_question": "Are drugs for attention deficit hyperactivity disorder effective and safe?",
             "inclusion": ["attention deficit hyperactivity disorder drug treatment", "controlled trial"],
             "exclusion": ["animal study"]},
}


@pytest.fixture(autouse=True)
def _mock_backend(settings):
    settings.CRYSTALLISE_LLM_BACKEND = "mock"


def run(tmp_path, source, labels="label", criteria=None, **options):
    criteria_file = tmp_path / "criteria.json"
    criteria_file.write_text(json.dumps(criteria or CRITERIA["Triptans"]))
    out, err = io.StringIO(), io.StringIO()
    call_command("evaluate_screening", str(source), labels=labels, criteria=str(criteria_file),
                 out=str(tmp_path / "report.json"), stdout=out, stderr=err, **options)
    return out.getvalue(), json.loads((tmp_path / "report.json").read_text())


@pytest.mark.parametrize("name, threshold", [("Triptans", "1.0"), ("ADHD", "0.5")])
def test_cohen_datasets_are_evaluated_offline_and_match_an_independent_computation(tmp_path, name, threshold):
    path = DATA / f"{name}.csv"
    if not path.exists():
        pytest.skip(f"shared dataset {path} is not available")
    printed, report = run(tmp_path, path, labels="label_abstract_screening", criteria=CRITERIA[name],
                          threshold=threshold)
    with path.open(newline="", encoding="utf-8") as fh:
        labels = {f"pmid:{row['pubmedID']}": int(row["label_abstract_screening"]) for row in csv.DictReader(fh)}
    job = ScreeningJob.objects.get(pk=report["job_id"])
    assert job.status == "completed" and job.llm_backend == "mock" and report["papers"] == len(labels)
    assert HumanReview.objects.filter(job=job, reviewer="gold").count() == len(labels)
    rows = list(ScreeningResult.objects.filter(job=job).values_list("paper__paper_id", "decision"))
    y = np.array([labels[pid] for pid, _ in rows])
    predicted = np.array([decision == "include" for _, decision in rows]).astype(int)
    tn, fp, fn, tp = confusion_matrix(y, predicted).ravel()
    evaluation = report["evaluation"]
    assert evaluation["confusion_matrix"] == {"tp": tp, "fp": fp, "fn": fn, "tn": tn}
    recall = evaluation["recall"]
    assert recall["estimate"] == pytest.approx(tp / (tp + fn))
    assert recall["lower"] == pytest.approx(beta.ppf(0.025, tp, fn + 1))
    assert recall["upper"] == pytest.approx(beta.ppf(0.975, tp + 1, fn))
    assert report["methods"]["cost_usd"] == 0 and report["wall_seconds"] >= report["screening_seconds"] > 0
    for text in ("Recall:", "Specificity:", "WSS@95:", "Recommended threshold", "Cost: $0.000000", "Wall time:"):
        assert text in printed
    assert f"{recall['estimate']:.3f}" in printed


def test_labels_from_json_lines_and_ris(tmp_path):
    jsonl = tmp_path / "papers.jsonl"
    jsonl.write_text("\n".join(json.dumps(p) for p in [
        {"id": "a", "title": "Triptan treatment of migraine: a randomized controlled trial", "label": 1},
        {"id": "b", "title": "Rats", "label": "no"}]))
    _, report = run(tmp_path, jsonl)
    assert report["evaluation"]["confusion_matrix"] == {"tp": 1, "fp": 0, "fn": 0, "tn": 1}
    ris = tmp_path / "papers.ris"
    ris.write_text("TY  - JOUR\nID  - r1\nTI  - Triptan treatment of migraine randomized controlled trial\nLB  - "
                   "include\nER  - \n\nTY  - JOUR\nID  - r2\nTI  - Rats\nLB  - 0\nER  - \n")
    _, report = run(tmp_path, ris, labels="LB")
    assert report["evaluation"]["confusion_matrix"] == {"tp": 1, "fp": 0, "fn": 0, "tn": 1}


def test_a_missing_column_or_a_bad_label_stops_before_anything_is_screened(tmp_path):
    source = tmp_path / "papers.csv"
    source.write_text("id,title,label\na,Migraine,1\nb,Rats,maybe\n")
    with pytest.raises(CommandError, match="no column 'verdict'"):
        run(tmp_path, source, labels="verdict")
    with pytest.raises(CommandError, match=r"Record 2 \(b\): label 'maybe'"):
        run(tmp_path, source)
    with pytest.raises(CommandError, match="No such file"):
        run(tmp_path, tmp_path / "missing.csv")
    assert not ScreeningJob.objects.exists()
