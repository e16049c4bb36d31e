"""Inter-annotator agreement.

``percent_agreement`` is the observed agreement of Fleiss (1971): for each item with n >= 2 judgements, the
share of ordered judgement pairs that agree, sum_c n_c (n_c - 1) / (n (n - 1)), averaged over items. It is
written out because it is three lines of pandas; chance-corrected measures (kappas, Krippendorff's alpha)
come from well-kept libraries.
"""

from __future__ import annotations

import pandas as pd


def item_agreement(annotations: pd.DataFrame) -> pd.Series:
    """Per-item pairwise agreement (items with one judgement are left out); the gate's worst offenders."""
    counts = annotations.groupby(["item_id", "label"], observed=True).size()
    per_item_n = counts.groupby(level="item_id").sum()
    agreeing_pairs = (counts * (counts - 1)).groupby(level="item_id").sum()
    rated = per_item_n[per_item_n >= 2]
    return (agreeing_pairs[rated.index] / (rated * (rated - 1))).rename("agreement")


def percent_agreement(annotations: pd.DataFrame) -> float:
    """Mean pairwise agreement over items with at least two judgements; NaN if there are none."""
    per_item = item_agreement(annotations)
    return float(per_item.mean()) if not per_item.empty else float("nan")
