"""Offline, deterministic clustering of papers before screening.

A screening job buckets its papers before any LLM call (contract, "Screening
jobs"): by ``topic`` (text clustering labelled by top terms), by
``study_design`` (a rule-based classifier) or ``none`` (one cluster ``all``).
Nothing here touches the network, the database or Django.

``cluster_papers`` returns a :class:`ClusterResult`: one cluster id per paper
(same order as the input) and the clusters themselves, ids dense ``0..k-1``,
ordered by descending size then label, never empty.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = [
    "BY_VALUES",
    "DESIGN_LABELS",
    "ClusterResult",
    "classify_design",
    "cluster_papers",
]

BY_VALUES = ("topic", "study_design", "none")
ALL_LABEL = "all"
DESIGN_LABELS = (
    "rct",
    "cohort",
    "case_control",
    "cross_sectional",
    "review",
    "case_report",
    "other",
)

# Above this many papers the topic step uses MiniBatchKMeans.
MINIBATCH_THRESHOLD = 5000
MAX_AUTO_CLUSTERS = 12
MAX_FEATURES = 20000
# Threads for BLAS/OpenMP inside scikit-learn. One thread keeps the k-means
# reductions in a fixed order (bit-for-bit reproducible runs) and leaves the
# other core to the web process; 100k papers still take well under a minute.
THREADS = 1


@dataclass
class ClusterResult:
    """Cluster id per paper (input order) and ``{"id", "label", "size"}`` per cluster."""

    assignments: list[int] = field(default_factory=list)
    clusters: list[dict] = field(default_factory=list)


# --------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------


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
        return _finalise(labels) if labels else ClusterResult([], [])
    papers = list(papers)
    if not papers:
        return ClusterResult([], [])
    if by == "none":
        return single_cluster(len(papers))
    return _cluster_by_topic(papers, count)


def single_cluster(n: int) -> ClusterResult:
    """Everything in one cluster labelled `all` (``by="none"``), without looking at the papers."""
    return ClusterResult([0] * n, [{"id": 0, "label": ALL_LABEL, "size": n}])


def _finalise(labels: Sequence[str]) -> ClusterResult:
    """Turn one (unique per cluster) label per paper into a ClusterResult."""
    sizes: dict[str, int] = {}
    for label in labels:
        sizes[label] = sizes.get(label, 0) + 1
    ordered = sorted(sizes, key=lambda lab: (-sizes[lab], lab))
    ids = {label: i for i, label in enumerate(ordered)}
    return ClusterResult(
        assignments=[ids[label] for label in labels],
        clusters=[
            {"id": ids[lab], "label": lab, "size": sizes[lab]} for lab in ordered
        ],
    )


# --------------------------------------------------------------------------
# Paper fields
# --------------------------------------------------------------------------


def _text(value) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _keywords(paper: Mapping) -> list[str]:
    raw = paper.get("keywords") or []
    if isinstance(raw, str):
        # Tolerate "a; b; c" as exported by CSV/RIS tools.
        raw = raw.split(";")
    if not isinstance(raw, Iterable):
        return []
    return [k.strip() for k in (_text(x) for x in raw) if k.strip()]


# --------------------------------------------------------------------------
# Study design
# --------------------------------------------------------------------------


def _kw(*names: str) -> frozenset[str]:
    """Whole keywords (MeSH headings / publication types), compared normalised.

    Whole-keyword matching keeps subject headings such as "Randomized
    Controlled Trials as Topic" or "Meta-Analysis as Topic" (papers *about*
    a design, typically reviews) from counting as the design itself.
    """
    return frozenset(_norm_keyword(name) for name in names)


def _norm_keyword(keyword: str) -> str:
    """Lower-case, single spaces, no MEDLINE decorations.

    "Randomized Controlled Trial [Publication Type]" and "*Cohort Studies"
    (major-topic star) become "randomized controlled trial" / "cohort studies".
    """
    keyword = _KW_DECORATION.sub("", keyword.lower())
    return " ".join(keyword.replace("*", " ").split())


_KW_DECORATION = re.compile(r"\[(?:publication type|pt|mesh|mh)\]|/.*$")


class _Phrase(NamedTuple):
    literal: str  # a substring every match contains; checked first with `in`
    regex: re.Pattern

    def search(self, text: str) -> bool:
        return self.literal in text and self.regex.search(text) is not None


def _p(literal: str, rest: str = "", *, not_after: Sequence[str] = ()) -> _Phrase:
    """A phrase for lower-cased text: ``literal`` at a word start, then ``rest``.

    Speed matters (100,000 abstracts): the plain ``in`` test on ``literal``
    rejects most texts at once, and the regex itself starts with the literal
    and checks the word boundary (and ``not_after`` prefixes such as "non-")
    with look-behinds placed *after* it, so the engine jumps straight to
    candidate positions instead of trying every one (a leading ``\\b`` or
    alternation is ~50x slower).
    """
    lit = re.escape(literal)
    guards = [rf"(?<!\w{lit})"] if re.match(r"\w", literal) else []
    guards += [f"(?<!{re.escape(prefix + literal)})" for prefix in not_after]
    return _Phrase(literal, re.compile(lit + "".join(guards) + rest))


def _phrases(*phrases: str) -> tuple[_Phrase, ...]:
    """Whole-word literal phrases."""
    return tuple(_p(phrase, r"\b") for phrase in phrases)


class _Rule(NamedTuple):
    label: str
    keywords: frozenset[str]  # whole keywords, normalised (_norm_keyword)
    text: tuple[_Phrase, ...]  # title + abstract + keywords, lower-cased
    title: tuple[_Phrase, ...] = ()  # title only, lower-cased


_AGE = r"\d+[- ]year[- ]old"
_REVIEWED = (
    r"(?:is|are|will be|have been) (?:briefly |critically |extensively )?reviewed\b"
)

# The first rule that matches wins; classify_design explains the order.
_DESIGN_RULES: tuple[_Rule, ...] = (
    # 1. Evidence syntheses.
    _Rule(
        "review",
        _kw(
            "meta-analysis",
            "metaanalysis",
            "systematic review",
            "network meta-analysis",
        ),
        (
            _p("meta", r"[- ]?analy[sz](?:is|es|ed|ing)\b"),
            _p("meta", r"[- ]?regression\b"),
            _p("systematic ", r"(?:literature )?reviews?\b"),
            _p("systematically review", r"s?\b"),
            *_phrases("cochrane review", "umbrella review", "scoping review"),
        ),
    ),
    # 2. Single-patient reports (also "case report and review of the
    #    literature"). Plural "case reports" in an abstract is usually
    #    background ("case reports link X to Y"), so only the title counts it.
    _Rule(
        "case_report",
        _kw("case reports", "case report"),
        (
            *_phrases("a case report", "this case report", "our case report"),
            *_phrases("the present case report", "a case of"),
            _p("case ", r"(?:study|presentation) of an? \d"),
            *(
                _p(
                    f"{who} {verb}",
                    r"(?:ed)? (?:here )?(?:an? |the |one |two |three )?"
                    r"(?:(?:unusual|rare|unique|first|novel|interesting) )?"
                    rf"(?:case|cases|patient|{_AGE}|"
                    r"(?:young |elderly )?(?:man|woman|boy|girl|child|infant))\b",
                )
                for who in ("we", "the authors")
                for verb in ("report", "describe", "present")
            ),
            # "A 34-year-old woman presented with ..."
            _p(
                "year",
                r"(?:(?<=\ba \d[- ]year)|(?<=\ba \d\d[- ]year))[- ]old "
                r"(?:man|woman|male|female|boy|girl|patient|child)\b"
                r".{0,80}?\b(?:presented|was admitted)\b",
            ),
        ),
        (
            _p("case report", r"s?\b"),
            _p("report of ", r"(?:a|an|one|two|three|\d+) (?:case|patient)s?\b"),
        ),
    ),
    # 3. Narrative reviews, overviews, literature reviews.
    _Rule(
        "review",
        _kw("review", "review literature", "practice guideline", "guideline"),
        (
            *(
                _p(f"{kind} review", r"\b")
                for kind in (
                    "literature",
                    "narrative",
                    "critical",
                    "comprehensive",
                    "qualitative",
                    "integrative",
                    "brief",
                    "short",
                    "selective",
                    "historical",
                    "clinical",
                )
            ),
            _p(
                "review of ",
                r"(?:the )?(?:current |recent |published |available |relevant )?"
                r"(?:literature|evidence|studies|trials|data on)\b",
            ),
            *(
                _p(f"this {what} ", r"(?:reviews|summari[sz]es|overviews)\b")
                for what in ("article", "paper", "chapter", "overview", "report")
            ),
            *_phrases("this review", "we review", "we overview", "review article"),
            _p("we summari", r"[sz]e\b"),
            _p(
                "to review ",
                r"(?:the )?(?:recent |current )?"
                r"(?:literature|evidence|advances|developments|published|available)\b",
            ),
            *(
                _p(f"{what} ", _REVIEWED)
                for what in (
                    "literature",
                    "evidence",
                    "studies",
                    "trials",
                    "options",
                    "advances",
                    "findings",
                    "developments",
                )
            ),
        ),
        # "Review" in the title, but not "peer review" / "review board".
        (
            _p("review", r"\b(?! board| committee)", not_after=("peer ", "peer-")),
            *_phrases("overview", "reappraisal"),
        ),
    ),
    # 4. Randomised trials.
    _Rule(
        "rct",
        _kw(
            "randomized controlled trial",
            "randomised controlled trial",
            "controlled clinical trial",
            "pragmatic clinical trial",
            "equivalence trial",
            "double-blind method",
            "single-blind method",
            "random allocation",
            "cross-over studies",
            "clinical trial, phase iii",
        ),
        (
            _p(
                "randomi",
                r"[sz](?:ed|ation|ing|ly)\b",
                not_after=("non-", "non ", "quasi-", "quasi "),
            ),
            _p("randomly ", r"(?:assigned|allocated|divided|selected to receive)\b"),
            _p("placebo", r"[- ]controlled\b"),
            *(
                _p(how, r"[- ](?:blind|masked)(?:ed)?\b")
                for how in ("double", "single", "triple")
            ),
            _p("cross", r"-?over (?:trial|study|design)\b"),
        ),
    ),
    # 5. Case-control (before cohort: such papers are often also indexed
    #    "Retrospective Studies").
    _Rule(
        "case_control",
        _kw("case-control studies", "case control studies"),
        (
            _p("case", r"[- ]control(?:led)?\b"),
            *_phrases("nested case"),
            _p("matched control", r"s?\b"),
        ),
    ),
    # 6. Explicit cross-sectional design.
    _Rule(
        "cross_sectional",
        _kw("cross-sectional studies", "cross sectional studies"),
        (
            _p("cross", r"[- ]sectional\b"),
            _p("prevalence ", r"(?:study|survey)\b"),
        ),
    ),
    # 7. Cohort / longitudinal / follow-up.
    _Rule(
        "cohort",
        _kw(
            "cohort studies",
            "prospective studies",
            "retrospective studies",
            "follow-up studies",
            "longitudinal studies",
        ),
        (
            _p("cohort", r"s?\b"),
            _p(
                "prospective",
                r"(?:ly)? (?:study|studies|follow(?:ed)?|observational|analysis|data"
                r"|design)\b",
            ),
            _p(
                "retrospective",
                r"(?:ly)? (?:study|studies|analysis|review|chart|cohort|data|design)\b",
            ),
            _p("follow", r"-?up stud(?:y|ies)\b"),
            _p("longitudinal"),
            _p("records ", r"(?:were|was) reviewed\b"),
            _p("charts ", r"(?:were|was) reviewed\b"),
            _p("registr", r"(?:y|ies)\b"),
        ),
    ),
    # 8. Surveys without a stronger design signal.
    _Rule(
        "cross_sectional",
        _kw("surveys and questionnaires", "health surveys", "questionnaires"),
        (
            _p("survey", r"(?:s|ed)?\b"),
            _p("questionnaire", r"[- ]based\b"),
        ),
    ),
)


def classify_design(paper: Mapping) -> str:
    """Classify a paper's study design from its title, abstract and keywords.

    Returns one of ``rct``, ``cohort``, ``case_control``, ``cross_sectional``,
    ``review``, ``case_report``, ``other``. Matching is case-insensitive.
    Keywords (MeSH headings / publication types such as "Randomized
    Controlled Trial", "Double-Blind Method", "Cohort Studies", "Case
    Reports", "Meta-Analysis") must match a whole keyword, so "... as Topic"
    headings (papers *about* a design) are not taken for the design itself;
    text phrases ("randomized", "placebo-controlled", "case-control", ...)
    match anywhere in title + abstract + the keywords that are not "... as
    Topic" headings.

    Precedence, first match wins:

    1. ``review`` -- meta-analysis / systematic review (keyword or text). A
       meta-analysis *of* RCTs is a review, so this beats every design it pools.
    2. ``case_report`` -- keyword "Case Reports", "case report(s)" in the
       title, "a/this case report", "a case of", "we report a patient / a
       34-year-old woman", "a 34-year-old woman presented". Beats narrative
       review so that "a case report and review of the literature" stays a
       case report.
    3. ``review`` -- narrative reviews: keyword "Review", "literature review",
       "this article reviews", "we review", a title containing "review" /
       "overview". Beats ``rct`` because reviews routinely mention
       "randomized, double-blind trials" in their body.
    4. ``rct`` -- "Randomized Controlled Trial", "Double-Blind Method",
       "randomized"/"randomised" (not "non-randomized"), "placebo-controlled",
       "double-blind", "crossover trial".
    5. ``case_control`` -- before cohort, as case-control papers are often
       also indexed "Retrospective Studies".
    6. ``cross_sectional`` -- explicit "cross-sectional" only.
    7. ``cohort`` -- cohort / prospective / retrospective / follow-up /
       longitudinal studies, chart reviews, registries.
    8. ``cross_sectional`` -- surveys / questionnaires with nothing stronger
       (a cohort or trial often uses a questionnaire, hence last).
    9. ``other``.
    """
    title = _text(paper.get("title")).lower()
    keywords = {_norm_keyword(k) for k in _keywords(paper)}
    # Text phrases also run over the keywords, except "... as Topic" headings.
    text = "\n".join(
        [
            title,
            _text(paper.get("abstract")).lower(),
            "; ".join(sorted(k for k in keywords if not k.endswith(" as topic"))),
        ]
    )
    for rule in _DESIGN_RULES:
        if not rule.keywords.isdisjoint(keywords):
            return rule.label
        if any(phrase.search(text) for phrase in rule.text):
            return rule.label
        if any(phrase.search(title) for phrase in rule.title):
            return rule.label
    return "other"


# --------------------------------------------------------------------------
# Topic
# --------------------------------------------------------------------------

# Boilerplate of structured abstracts and bibliographic noise; scikit-learn's
# English stop words are added on top.
_EXTRA_STOP_WORDS = frozenset(
    {
        # structured-abstract headings and reporting boilerplate
        "abstract", "aim", "aims", "background", "conclusion", "conclusions",
        "design", "et", "al", "findings", "introduction", "method", "methods",
        "objective", "objectives", "purpose", "result", "results", "setting",
        "study", "studies", "using", "used", "use", "compared", "versus", "vs",
        "significant", "significantly", "respectively", "including",
        # units
        "mg", "kg", "ml", "mcg", "ng", "mmol",
        # pieces of MeSH headings ("Double-Blind Method", "... as Topic")
        "topic", "double", "blind", "single",
    }
)  # fmt: skip

# Words of two or more characters starting with a letter: drops bare numbers
# (doses, p-values, years) that would otherwise dominate the labels.
_TOKEN_PATTERN = r"(?u)\b[^\W\d_]\w+\b"


def _paper_text(paper: Mapping) -> str:
    return " ".join(
        part
        for part in (
            _text(paper.get("title")),
            _text(paper.get("abstract")),
            " ; ".join(_keywords(paper)),
        )
        if part
    )


def _auto_k(n: int) -> int:
    if n < 4:
        return 1
    return min(MAX_AUTO_CLUSTERS, max(2, round(math.sqrt(n / 5))))


def _cluster_by_topic(papers: list[Mapping], count: int | None) -> ClusterResult:
    import numpy as np
    import scipy.sparse as sp
    from threadpoolctl import threadpool_limits

    n = len(papers)
    texts = [_paper_text(p) for p in papers]
    nonempty = [i for i, t in enumerate(texts) if t.strip()]
    if not nonempty:
        return single_cluster(n)

    with threadpool_limits(limits=THREADS):
        matrix, terms = _vectorise([texts[i] for i in nonempty])
        if matrix is None:
            return single_cluster(n)
        # Rows that lost every term to pruning behave like empty papers.
        row_nnz = np.diff(matrix.indptr)
        fit_rows = np.flatnonzero(row_nnz > 0)
        if fit_rows.size == 0:
            return single_cluster(n)

        k = _auto_k(n) if count is None else int(count)
        k = max(1, min(k, n, int(fit_rows.size)))

        fit_matrix = matrix[fit_rows]
        model = _kmeans(k, fit_rows.size)
        model.fit(fit_matrix)
        labels_nonempty = model.predict(matrix)
        centers = np.asarray(model.cluster_centers_)

        # Papers without usable text take the cluster the model predicts for
        # an all-zero row (the centroid nearest the origin), like the rows
        # above that lost every term to pruning.
        assignments = np.zeros(n, dtype=np.int64)
        if len(nonempty) < n:
            zero_row = sp.csr_matrix((1, len(terms)), dtype=matrix.dtype)
            assignments[:] = int(model.predict(zero_row)[0])
        assignments[np.asarray(nonempty, dtype=np.int64)] = labels_nonempty

    model_ids = assignments.tolist()
    sizes: dict[int, int] = {}
    for c in model_ids:
        sizes[c] = sizes.get(c, 0) + 1
    used = sorted(sizes)
    base_labels = {c: _centroid_label(centers[c], terms) for c in used}
    # Order by size, then label, then model id (only to make ties total),
    # then make labels unique: the larger cluster keeps the plain label, the
    # next gets " (2)", and so on.
    ordered = sorted(used, key=lambda c: (-sizes[c], base_labels[c], c))
    final_labels: dict[int, str] = {}
    taken = set(base_labels.values())
    for c in ordered:
        label = base_labels[c]
        if label in final_labels.values():
            suffix = 2
            while f"{label} ({suffix})" in taken:
                suffix += 1
            label = f"{label} ({suffix})"
            taken.add(label)
        final_labels[c] = label
    ordered.sort(key=lambda c: (-sizes[c], final_labels[c]))
    new_id = {c: i for i, c in enumerate(ordered)}
    return ClusterResult(
        assignments=[new_id[c] for c in model_ids],
        clusters=[
            {"id": new_id[c], "label": final_labels[c], "size": sizes[c]}
            for c in ordered
        ],
    )


def _vectorise(texts: list[str]):
    """TF-IDF matrix (float32, L2-normalised rows) and its terms, or (None, [])."""
    import numpy as np
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, TfidfVectorizer

    n = len(texts)
    stop_words = sorted(ENGLISH_STOP_WORDS.union(_EXTRA_STOP_WORDS))
    attempts = []
    if n >= 20:
        # Terms in more than 60% of the papers (the search topic itself,
        # "humans", ...) say nothing about sub-topics.
        attempts.append({"min_df": 2, "max_df": 0.6})
        attempts.append({"min_df": 2, "max_df": 1.0})
    attempts.append({"min_df": 1, "max_df": 1.0})
    for params in attempts:
        vectorizer = TfidfVectorizer(
            lowercase=True,
            stop_words=stop_words,
            token_pattern=_TOKEN_PATTERN,
            ngram_range=(1, 1),
            sublinear_tf=True,
            max_features=MAX_FEATURES,
            dtype=np.float32,
            **params,
        )
        try:
            matrix = vectorizer.fit_transform(texts)
        except ValueError:  # empty vocabulary / everything pruned
            continue
        if matrix.shape[1] == 0 or matrix.nnz == 0:
            continue
        return matrix.tocsr(), list(vectorizer.get_feature_names_out())
    return None, []


def _kmeans(k: int, n: int):
    from sklearn.cluster import KMeans, MiniBatchKMeans

    if n > MINIBATCH_THRESHOLD:
        return MiniBatchKMeans(
            n_clusters=k,
            random_state=0,
            n_init=3,
            batch_size=2048,
            max_iter=100,
            max_no_improvement=10,
            reassignment_ratio=0.01,
        )
    return KMeans(n_clusters=k, random_state=0, n_init=4, max_iter=300)


def _centroid_label(center, terms: list[str], top: int = 3) -> str:
    import numpy as np

    order = np.argsort(-center, kind="stable")[:top]
    words = [terms[i] for i in order if center[i] > 0]
    return ", ".join(words) if words else "misc"
