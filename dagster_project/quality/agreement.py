"""Inter-annotator agreement over long-format annotations (``item_id``, ``annotator_id``, ``label``).

Why several measures: raw agreement flatters tasks with a dominant label, so gates and reports also need
chance-corrected figures, and each fits a different data shape:

* ``percent_agreement`` -- the observed agreement of Fleiss (1971): for each item with n >= 2 judgements, the
  share of ordered judgement pairs that agree, sum_c n_c (n_c - 1) / (n (n - 1)), averaged over items.
* ``cohen_kappa`` -- Cohen (1960) per annotator pair, averaged over pairs (Light's 1971 kappa when there are
  more than two annotators; exactly Cohen's kappa with two).
* ``fleiss_kappa`` -- Fleiss (1971) for many raters who need not be the same people on every item.
* ``krippendorff_alpha`` -- Krippendorff's alpha, the one that copes with missing judgements and with
  ordinal / interval / ratio labels; computed by the ``krippendorff`` package.

Conventions shared by every function here:

* Missing judgements are simply absent rows. An empty frame, or one with no item judged twice, gives NaN.
* When the chance-corrected formula is 0/0 -- every judgement that can be paired carries the same single
  label, so chance agreement is already perfect -- the result is NaN, not 1.0: the data cannot tell
  agreement from a constant labeller. All-agree data that uses at least two labels gives 1.0.
* Repeated judgements by one annotator on one item: ``percent_agreement`` and ``fleiss_kappa`` count every
  judgement (Fleiss's raters are anonymous, so a repeat is one more rating of the item, and the observed
  agreement of ``fleiss_kappa`` stays equal to ``percent_agreement``). ``cohen_kappa`` and
  ``krippendorff_alpha`` need one value per (annotator, item) cell, so they use the annotator's *modal* label on
  the item, ties going to the smallest label in sort order (the same rule as ``majority_vote``, so the result
  never depends on row order).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from itertools import combinations
from typing import Literal

import numpy as np
import pandas as pd

KrippendorffLevel = Literal["nominal", "ordinal", "interval", "ratio"]
KRIPPENDORFF_LEVELS: tuple[str, ...] = ("nominal", "ordinal", "interval", "ratio")


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


def modal_labels(annotations: pd.DataFrame) -> pd.DataFrame:
    """One row per (item_id, annotator_id): the annotator's most frequent label on the item.

    Ties go to the smallest label in sort order, so the result does not depend on row order.
    """
    if annotations.empty:
        return pd.DataFrame(columns=["item_id", "annotator_id", "label"])
    counts = annotations.groupby(["item_id", "annotator_id", "label"], observed=True).size().rename("n").reset_index()
    return (
        counts.sort_values(["item_id", "annotator_id", "n", "label"], ascending=[True, True, False, True])
        .drop_duplicates(["item_id", "annotator_id"])
        .drop(columns="n")
        .reset_index(drop=True)
    )


def _kappa_from_table(table: np.ndarray) -> float:
    """Cohen's kappa from a square contingency table of counts; NaN when chance agreement is 1 (0/0)."""
    n = table.sum()
    observed = np.trace(table) / n
    expected = float((table.sum(axis=1) / n) @ (table.sum(axis=0) / n))
    if np.isclose(expected, 1.0):
        return float("nan")
    return float((observed - expected) / (1.0 - expected))


def cohen_kappa(annotations: pd.DataFrame) -> float:
    """Mean over annotator pairs of Cohen's (1960) kappa on the items both annotators judged.

    * With two annotators this is exactly Cohen's kappa; with more it is Light's (1971) average pairwise kappa.
    * Repeated judgements by an annotator on an item are reduced to that annotator's modal label (see module doc).
    * Pairs that share fewer than 2 items are skipped: on one item kappa is 0/0 or a coin flip, never evidence.
    * Pairs whose kappa is 0/0 (both used one and the same label on every shared item) are skipped too.
    * NaN when no pair is left (empty frame, a single annotator, no overlap, or only 0/0 pairs).

    Written out rather than taken from ``sklearn.metrics.cohen_kappa_score`` or statsmodels' ``cohens_kappa``:
    the formula is two lines on a crosstab, we need the pair loop and the explicit 0/0 -> NaN rule anyway, and a
    runtime dependency on scikit-learn for that is not worth it. The tests cross-check against scikit-learn.
    """
    cells = modal_labels(annotations)
    if cells.empty:
        return float("nan")
    wide = cells.pivot(index="item_id", columns="annotator_id", values="label")
    kappas: list[float] = []
    for first, second in combinations(sorted(wide.columns), 2):
        shared = wide[[first, second]].dropna()
        if len(shared) < 2:
            continue
        table = pd.crosstab(shared[first], shared[second])
        labels = table.index.union(table.columns)
        square = table.reindex(index=labels, columns=labels, fill_value=0).to_numpy(dtype=float)
        kappa = _kappa_from_table(square)
        if not np.isnan(kappa):
            kappas.append(kappa)
    return float(np.mean(kappas)) if kappas else float("nan")


def fleiss_kappa(annotations: pd.DataFrame) -> float:
    """Fleiss' (1971) kappa, generalised to items with differing numbers of judgements.

    Fleiss assumes every item has the same number n of ratings. We use the standard generalisation for variable
    raters rather than restricting to the modal n: P_i = sum_c n_ic (n_ic - 1) / (n_i (n_i - 1)) per item,
    P-bar = mean of P_i, p_c = sum_i n_ic / sum_i n_i, P-bar_e = sum_c p_c^2, kappa = (P-bar - P-bar_e) /
    (1 - P-bar_e), over items with n_i >= 2. Why: restricting to the modal n throws away real judgements (in
    crowd data often most of them) and makes the result jump when one more judgement arrives; the generalised form
    uses everything, equals Fleiss exactly when n is constant, and its P-bar is exactly ``percent_agreement``.
    Items judged once carry no pair and are left out of P-bar and of p_c. Every judgement counts, repeats by one
    annotator included (Fleiss's raters are anonymous). NaN when no item has two judgements or when P-bar_e = 1.

    Written out because ``statsmodels.stats.inter_rater.fleiss_kappa`` asserts a constant number of raters per
    item; the tests check we agree with it whenever n is constant.
    """
    if annotations.empty:
        return float("nan")
    counts = annotations.groupby(["item_id", "label"], observed=True).size().unstack(fill_value=0)
    per_item_n = counts.sum(axis=1)
    counts = counts[per_item_n >= 2]
    if counts.empty:
        return float("nan")
    table = counts.to_numpy(dtype=float)
    n_i = table.sum(axis=1)
    p_bar = float(np.mean((table * (table - 1)).sum(axis=1) / (n_i * (n_i - 1))))
    p_c = table.sum(axis=0) / table.sum()
    p_bar_e = float(np.sum(p_c**2))
    if np.isclose(p_bar_e, 1.0):
        return float("nan")
    return (p_bar - p_bar_e) / (1.0 - p_bar_e)


def _numeric_labels(labels: pd.Series, level: str) -> pd.Series:
    """Labels as floats for interval/ratio alpha, or a ValueError that says which labels are not numbers."""
    if pd.api.types.is_bool_dtype(labels):
        raise ValueError(f"krippendorff_alpha(level={level!r}) needs numeric labels, got booleans")
    numeric = pd.to_numeric(labels, errors="coerce")
    bad = labels[numeric.isna() & labels.notna()]
    if not bad.empty:
        examples = ", ".join(repr(v) for v in bad.unique().tolist()[:5])
        raise ValueError(f"krippendorff_alpha(level={level!r}) needs numeric labels; not numbers: {examples}")
    return numeric.astype(float)


def _ordinal_codes(labels: pd.Series, order: Sequence[Hashable] | None) -> pd.Series:
    """Rank of each label on the ordinal scale: position in ``order`` if given, else numeric sort order."""
    if order is not None:
        if len(set(order)) != len(order):
            raise ValueError("krippendorff_alpha: `order` has duplicate labels")
        position = {label: rank for rank, label in enumerate(order)}
        unknown = [v for v in labels.unique().tolist() if v not in position]
        if unknown:
            examples = ", ".join(repr(v) for v in unknown[:5])
            raise ValueError(f"krippendorff_alpha: labels missing from `order`: {examples}")
        return labels.map(position).astype(float)
    if not pd.api.types.is_numeric_dtype(labels) or pd.api.types.is_bool_dtype(labels):
        raise ValueError(
            "krippendorff_alpha(level='ordinal') with non-numeric labels needs `order`, the labels from lowest "
            "to highest"
        )
    # Only ranks matter to the ordinal metric, so the values themselves can serve as codes.
    return labels.astype(float)


def krippendorff_alpha(
    annotations: pd.DataFrame,
    level: KrippendorffLevel = "nominal",
    order: Sequence[Hashable] | None = None,
) -> float:
    """Krippendorff's alpha at the given level of measurement, via the ``krippendorff`` package.

    The reliability matrix is annotators x items with NaN where an annotator did not judge an item; an annotator's
    repeated judgements on an item are reduced to their modal label (see module doc). ``interval`` and ``ratio``
    need numeric labels (ValueError naming the offenders otherwise). ``ordinal`` takes numeric labels in their
    natural order, or any labels with ``order`` (lowest to highest). ``order`` is only accepted for ``ordinal``.

    NaN when alpha is undefined: no item has two judgements, or every pairable judgement has the same value
    (expected disagreement 0, so 0/0).
    """
    if level not in KRIPPENDORFF_LEVELS:
        raise ValueError(f"krippendorff_alpha: level must be one of {KRIPPENDORFF_LEVELS}, got {level!r}")
    if order is not None and level != "ordinal":
        raise ValueError("krippendorff_alpha: `order` only applies to level='ordinal'")
    cells = modal_labels(annotations)
    if cells.empty:
        return float("nan")

    if level == "nominal":
        # Nominal distance only asks "equal or not", so integer codes stand in for labels of any type.
        codes = pd.Series(pd.factorize(cells["label"], sort=False)[0], index=cells.index, dtype=float)
    elif level == "ordinal":
        codes = _ordinal_codes(cells["label"], order)
    else:
        codes = _numeric_labels(cells["label"], level)

    matrix = (
        cells.assign(value=codes).pivot(index="annotator_id", columns="item_id", values="value").to_numpy(dtype=float)
    )
    pairable = matrix[:, (~np.isnan(matrix)).sum(axis=0) >= 2]
    values = pairable[~np.isnan(pairable)]
    if values.size == 0 or np.unique(values).size < 2:
        return float("nan")
    import krippendorff  # here, with the other statistics libraries: loading the code location needs none

    return float(krippendorff.alpha(reliability_data=matrix, level_of_measurement=level))
