"""Study design by rules: a classifier over MeSH keywords and telltale phrases.

Deterministic and offline; :func:`classify_design` explains the rules' order.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from screening.clustering.papers import field_text, paper_keywords

DESIGN_LABELS = (
    "rct",
    "cohort",
    "case_control",
    "cross_sectional",
    "review",
    "case_report",
    "other",
)


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
    title = field_text(paper.get("title")).lower()
    keywords = {_norm_keyword(k) for k in paper_keywords(paper)}
    # Text phrases also run over the keywords, except "... as Topic" headings.
    text = "\n".join(
        [
            title,
            field_text(paper.get("abstract")).lower(),
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
