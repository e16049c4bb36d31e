"""Drift of a new batch against what is already on ``main``.

Why: a model trained on ``main`` silently degrades when a batch comes from a different population (a new
client region, a changed export, a broken upstream field). Two views are reported per feature, because they
answer different questions:

- the Population Stability Index says *how much* the distribution moved, on a scale that does not grow with
  sample size, so it is what the gate compares to a threshold (rule of thumb: < 0.1 stable, 0.1-0.2 moderate,
  > 0.2 a real shift);
- a two-sample test (Kolmogorov-Smirnov for numbers, chi-squared on the contingency table for categories,
  both from SciPy) says whether the move is *more than sampling noise*; on big batches it flags tiny shifts,
  which is why it is reported, not gated on.

PSI is written out because it is a few lines of NumPy and the libraries that ship it bring whole monitoring
stacks with them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from dagster_project.quality.checks import WORST_LIMIT
from dagster_project.quality.result import Comparison, GateResult

PSI_EPSILON = 1e-4
"""Floor for a bin's share before taking logs.

An empty bin on one side makes ln(actual / expected) infinite; flooring both shares at 1e-4 (one record in
ten thousand) keeps PSI finite while still making a category that appears or vanishes count heavily: a bin
going from 10% to empty adds (0.1 - 0.0001) * ln(0.1 / 0.0001), about 0.69. Shares are not renormalised."""

REPORT_COLUMNS = ["feature", "kind", "psi", "test", "statistic", "p_value", "n_reference", "n_current"]


def _is_numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def _psi_from_counts(expected: np.ndarray, actual: np.ndarray) -> float:
    if expected.sum() == 0 or actual.sum() == 0:
        return float("nan")
    e = np.maximum(expected / expected.sum(), PSI_EPSILON)
    a = np.maximum(actual / actual.sum(), PSI_EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


def _category_counts(expected: pd.Series, actual: pd.Series) -> tuple[list[Any], np.ndarray, np.ndarray]:
    e_counts = expected.dropna().value_counts()
    a_counts = actual.dropna().value_counts()
    categories = sorted(set(e_counts.index) | set(a_counts.index), key=str)
    return (
        categories,
        e_counts.reindex(categories, fill_value=0).to_numpy(dtype=float),
        a_counts.reindex(categories, fill_value=0).to_numpy(dtype=float),
    )


def _numeric_counts(expected: pd.Series, actual: pd.Series, bins: int) -> tuple[np.ndarray, np.ndarray]:
    e = expected.dropna().to_numpy(dtype=float)
    a = actual.dropna().to_numpy(dtype=float)
    # Interior cut points at the reference's quantiles; the outer bins are open, so values of the current
    # batch beyond the reference's range still land somewhere. Tied quantiles merge bins (a constant reference
    # gives two: <= the constant and above it).
    edges = np.unique(np.quantile(e, np.linspace(0, 1, bins + 1)[1:-1])) if len(e) else np.array([])
    e_counts = np.bincount(np.searchsorted(edges, e, side="left"), minlength=len(edges) + 1)
    a_counts = np.bincount(np.searchsorted(edges, a, side="left"), minlength=len(edges) + 1)
    return e_counts.astype(float), a_counts.astype(float)


def psi(expected: pd.Series, actual: pd.Series, bins: int = 10) -> float:
    """Population Stability Index, sum over bins of (actual - expected) * ln(actual / expected) shares.

    Numeric series are cut at ``bins``-quantiles of ``expected`` (bins are (q_i-1, q_i], open at both ends);
    anything else is compared category by category over the union of both sides' categories. Nulls are left
    out; NaN if either side has no values. Empty bins are floored at :data:`PSI_EPSILON`.
    """
    if bins < 2:
        raise ValueError(f"need at least 2 bins, got {bins}")
    if _is_numeric(expected) and _is_numeric(actual):
        e_counts, a_counts = _numeric_counts(expected, actual, bins)
    else:
        _, e_counts, a_counts = _category_counts(expected, actual)
    return _psi_from_counts(e_counts, a_counts)


def _chi2(e_counts: np.ndarray, a_counts: np.ndarray) -> tuple[float, float]:
    table = np.vstack([e_counts, a_counts])
    table = table[:, table.sum(axis=0) > 0]  # a category neither side has carries no information
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 0.0, 1.0
    from scipy.stats import chi2_contingency  # here, not at the top: scipy.stats takes ~0.9 s to import

    result = chi2_contingency(table)
    return float(result.statistic), float(result.pvalue)


def _feature_row(name: str, reference: pd.Series, current: pd.Series, kind: str) -> dict[str, Any]:
    ref, cur = reference.dropna(), current.dropna()
    row: dict[str, Any] = {"feature": name, "kind": kind, "psi": psi(reference, current)}
    if kind == "numeric":
        if len(ref) and len(cur):
            from scipy.stats import ks_2samp

            result = ks_2samp(ref.to_numpy(dtype=float), cur.to_numpy(dtype=float))
            statistic, p_value = float(result.statistic), float(result.pvalue)
        else:
            statistic, p_value = float("nan"), float("nan")
        row |= {"test": "ks", "statistic": statistic, "p_value": p_value}
    else:
        _, e_counts, a_counts = _category_counts(reference.astype(object), current.astype(object))
        statistic, p_value = _chi2(e_counts, a_counts)
        row |= {"test": "chi2", "statistic": statistic, "p_value": p_value}
    return row | {"n_reference": len(ref), "n_current": len(cur)}


def drift_report(
    reference: pd.DataFrame, current: pd.DataFrame, numeric: list[str], categorical: list[str]
) -> pd.DataFrame:
    """One row per feature: ``feature``, ``kind``, ``psi``, ``test`` ("ks"/"chi2"), ``statistic``, ``p_value``,
    and the non-null counts ``n_reference``, ``n_current`` the numbers rest on."""
    rows = [_feature_row(name, reference[name], current[name], "numeric") for name in numeric]
    rows += [
        _feature_row(name, reference[name].astype(object), current[name].astype(object), "categorical")
        for name in categorical
    ]
    return pd.DataFrame(rows, columns=REPORT_COLUMNS)


def label_drift(reference_labels: pd.Series, current_labels: pd.Series, classes: list[str]) -> dict[str, float]:
    """PSI and chi-squared test of the label distribution; every class in ``classes`` is a category even if
    neither side has it (labels outside ``classes`` are compared too)."""
    ref = reference_labels.dropna().astype(object)
    cur = current_labels.dropna().astype(object)
    categories = list(classes) + sorted((set(ref) | set(cur)) - set(classes), key=str)
    e_counts = ref.value_counts().reindex(categories, fill_value=0).to_numpy(dtype=float)
    a_counts = cur.value_counts().reindex(categories, fill_value=0).to_numpy(dtype=float)
    statistic, p_value = _chi2(e_counts, a_counts)
    return {"psi": _psi_from_counts(e_counts, a_counts), "chi2": statistic, "p_value": p_value}


def drift_check(report: pd.DataFrame, max_psi: float = 0.2, alpha: float | None = 0.01) -> GateResult:
    """Passes when no feature drifts: PSI above ``max_psi`` *and* (with ``alpha``) a significant KS/chi-squared test.

    Why both: PSI has no notion of sample size -- two samples of 50 from one distribution routinely score above
    0.2 on ten bins -- while a test alone flags trivial shifts in large batches. Requiring both blocks shifts
    that are large and real. ``value`` is the largest PSI among significant features (all features when
    ``alpha`` is None; 0 without any). ``worst`` lists every feature by PSI, largest first, with its p-value.
    ``sample_size`` is the largest current non-null count.
    """
    scored = report.dropna(subset=["psi"]).sort_values("psi", ascending=False, kind="stable")
    significant = scored if alpha is None else scored[scored["p_value"] < alpha]
    value = float(significant["psi"].iloc[0]) if not significant.empty else 0.0
    worst = [
        {
            "feature": str(row["feature"]),
            "kind": str(row["kind"]),
            "psi": float(row["psi"]),
            "test": str(row["test"]),
            "statistic": float(row["statistic"]),
            "p_value": float(row["p_value"]),
        }
        for _, row in scored.head(WORST_LIMIT).iterrows()
    ]
    sample_size = int(report["n_current"].max()) if "n_current" in report and not report.empty else 0
    return GateResult(name="drift", passed=value <= max_psi, value=value, threshold=max_psi,
                      comparison=Comparison.AT_MOST, sample_size=sample_size, worst=worst)
