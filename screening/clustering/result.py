"""What clustering produces, whatever the method: one cluster id per paper and the clusters."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

ALL_LABEL = "all"


@dataclass
class ClusterResult:
    """Cluster id per paper (input order) and ``{"id", "label", "size"}`` per cluster."""

    assignments: list[int] = field(default_factory=list)
    clusters: list[dict] = field(default_factory=list)


def single_cluster(n: int) -> ClusterResult:
    """Everything in one cluster labelled `all` (``by="none"``), without looking at the papers."""
    return ClusterResult([0] * n, [{"id": 0, "label": ALL_LABEL, "size": n}])


def by_label(labels: Sequence[str]) -> ClusterResult:
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
