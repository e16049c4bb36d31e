"""Quality measures as plain functions over long-format annotation frames (``item_id``, ``annotator_id``, ``label``).

They know nothing of Dagster or storage, so gates, reports and tests all call the same code.
"""

from dagster_project.quality.aggregation import CONSOLIDATED_COLUMNS, DawidSkeneResult, dawid_skene, majority_vote
from dagster_project.quality.agreement import (
    KRIPPENDORFF_LEVELS,
    cohen_kappa,
    fleiss_kappa,
    item_agreement,
    krippendorff_alpha,
    modal_labels,
    percent_agreement,
)
from dagster_project.quality.gold import GOLD_ACCURACY_COLUMNS, gold_accuracy

__all__ = [
    "CONSOLIDATED_COLUMNS",
    "GOLD_ACCURACY_COLUMNS",
    "KRIPPENDORFF_LEVELS",
    "DawidSkeneResult",
    "cohen_kappa",
    "dawid_skene",
    "fleiss_kappa",
    "gold_accuracy",
    "item_agreement",
    "krippendorff_alpha",
    "majority_vote",
    "modal_labels",
    "percent_agreement",
]
