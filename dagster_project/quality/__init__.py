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
from dagster_project.quality.checks import class_balance, completeness, duplicate_rate, pii_residual
from dagster_project.quality.drift import drift_check, drift_report, label_drift, psi
from dagster_project.quality.gold import GOLD_ACCURACY_COLUMNS, gold_accuracy
from dagster_project.quality.result import Comparison, ComputedOn, GateResult, GateVerdict
from dagster_project.quality.slices import slice_metrics
from dagster_project.quality.synthetic import C2STResult, classifier_two_sample_test, synthetic_share

__all__ = [
    "C2STResult",
    "Comparison",
    "ComputedOn",
    "GateResult",
    "GateVerdict",
    "class_balance",
    "classifier_two_sample_test",
    "completeness",
    "drift_check",
    "drift_report",
    "duplicate_rate",
    "label_drift",
    "pii_residual",
    "psi",
    "slice_metrics",
    "synthetic_share",
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
