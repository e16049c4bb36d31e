"""Turning several judgements per item into one label."""

from __future__ import annotations

import pandas as pd

CONSOLIDATED_COLUMNS = ["item_id", "label", "confidence", "n_judgements"]


def majority_vote(annotations: pd.DataFrame) -> pd.DataFrame:
    """Most frequent label per item; ``confidence`` is its share of the item's judgements.

    Ties are broken by label name so the result never depends on row order.
    """
    if annotations.empty:
        return pd.DataFrame(columns=CONSOLIDATED_COLUMNS)
    counts = annotations.groupby(["item_id", "label"], observed=True).size().rename("votes").reset_index()
    totals = counts.groupby("item_id")["votes"].transform("sum")
    winners = (
        counts.assign(n_judgements=totals)
        .sort_values(["item_id", "votes", "label"], ascending=[True, False, True])
        .drop_duplicates("item_id")
    )
    winners["confidence"] = winners["votes"] / winners["n_judgements"]
    return winners[CONSOLIDATED_COLUMNS].reset_index(drop=True)
