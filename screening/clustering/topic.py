"""Topic clustering: TF-IDF over title, abstract and keywords, then k-means.

Clusters are labelled by their centroids' heaviest terms. scikit-learn, numpy
and scipy are imported when first needed: the web process never pays for them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from screening.clustering.papers import field_text, paper_keywords
from screening.clustering.result import ClusterResult, single_cluster

# Above this many papers the topic step uses MiniBatchKMeans.
MINIBATCH_THRESHOLD = 5000
MAX_AUTO_CLUSTERS = 12
MAX_FEATURES = 20000
# Threads for BLAS/OpenMP inside scikit-learn. One thread keeps the k-means
# reductions in a fixed order (bit-for-bit reproducible runs) and leaves the
# other core to the web process; 100k papers still take well under a minute.
THREADS = 1


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
            field_text(paper.get("title")),
            field_text(paper.get("abstract")),
            " ; ".join(paper_keywords(paper)),
        )
        if part
    )


def _auto_k(n: int) -> int:
    if n < 4:
        return 1
    return min(MAX_AUTO_CLUSTERS, max(2, round(math.sqrt(n / 5))))


def cluster_by_topic(papers: list[Mapping], count: int | None) -> ClusterResult:
    """``count`` clusters (clamped to the papers with usable text), else a size heuristic."""
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
