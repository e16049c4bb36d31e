"""Annotator accuracy against gold (known-answer) items.

Agreement says whether annotators agree with each other; gold says whether they are right. A gold set is usually
small, so a bare accuracy over 12 items means little: every row carries a Wilson 95% interval, which, unlike the
normal approximation, stays inside [0, 1] and behaves at 0 or 100% correct and at small n -- exactly the cases a
gold check meets. The interval comes from statsmodels' ``proportion_confint(method="wilson")``: it is vectorised
over all annotators at once and is the reference implementation the wider Python stats stack uses.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

GOLD_ACCURACY_COLUMNS = ["annotator_id", "n_gold", "correct", "accuracy", "ci_low", "ci_high"]
OVERALL = "__overall__"


def gold_accuracy(annotations: pd.DataFrame, gold: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Per-annotator accuracy on gold items, plus an ``__overall__`` row pooling every gold judgement.

    * ``gold`` has ``item_id`` and ``label`` (the true label). An item listed twice with the same label counts
      once; with different labels it is a ValueError.
    * Only judgements on gold items count. ``n_gold`` counts judgements, so an annotator who judged a gold item
      twice contributes two trials (repeat consistency is part of accuracy).
    * Annotators with no judgement on a gold item are absent. Rows are sorted by ``annotator_id``; the overall
      row is last. ``ci_low``/``ci_high`` is the Wilson interval at level ``1 - alpha`` (95% by default).
    * With no gold judgements at all, only the overall row is returned, with n_gold 0 and NaN accuracy/interval.
    """
    truth = gold[["item_id", "label"]].drop_duplicates()
    conflicting = truth["item_id"][truth["item_id"].duplicated()].unique()
    if len(conflicting):
        raise ValueError(f"gold_accuracy: gold items with more than one label: {list(conflicting[:5])}")

    judged = annotations[["annotator_id", "item_id", "label"]].merge(
        truth.rename(columns={"label": "gold_label"}), on="item_id", how="inner"
    )
    judged = judged.assign(is_correct=(judged["label"] == judged["gold_label"]).astype(int))
    per_annotator = (
        judged.groupby("annotator_id", sort=True)["is_correct"].agg(n_gold="size", correct="sum").reset_index()
    )
    overall = pd.DataFrame(
        {"annotator_id": [OVERALL], "n_gold": [len(judged)], "correct": [int(judged["is_correct"].sum())]}
    )
    result = pd.concat([per_annotator, overall], ignore_index=True) if len(per_annotator) else overall
    result["annotator_id"] = result["annotator_id"].astype(object)
    result["n_gold"] = result["n_gold"].astype(int)
    result["correct"] = result["correct"].astype(int)

    n = result["n_gold"].to_numpy()
    k = result["correct"].to_numpy()
    has_data = n > 0
    accuracy = np.full(len(result), np.nan)
    low = np.full(len(result), np.nan)
    high = np.full(len(result), np.nan)
    accuracy[has_data] = k[has_data] / n[has_data]
    if has_data.any():
        from statsmodels.stats.proportion import proportion_confint  # here: statsmodels takes ~1 s to import

        low[has_data], high[has_data] = proportion_confint(k[has_data], n[has_data], alpha=alpha, method="wilson")
    result["accuracy"] = accuracy
    result["ci_low"] = low
    result["ci_high"] = high
    return result[GOLD_ACCURACY_COLUMNS]
