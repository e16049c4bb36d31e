"""Synthetic data: how much of a batch is synthetic, and whether it can be told apart from real data.

Why: synthetic records fill gaps (rare classes, new languages) cheaply, but a dataset that is mostly synthetic,
or whose synthetic part is easy to recognise, teaches a model the generator's quirks instead of the world. So a
batch carries a cap on its synthetic share, and a classifier two-sample test (Lopez-Paz & Oquab, "Revisiting
Classifier Two-Sample Tests", ICLR 2017) checks realism: if a plain classifier cannot separate real from
synthetic records better than chance (cross-validated ROC AUC near 0.5), the two look alike to it; an AUC near
1 means the synthetic records are recognisably different. The classifier, features and cross-validation are
scikit-learn's; only their assembly is here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from dagster_project.quality.result import Comparison, GateResult

if TYPE_CHECKING:  # scikit-learn is imported where the test runs: loading the code location need not pay for it
    from sklearn.compose import ColumnTransformer

MIN_ROWS = 20
"""Fewest rows either side may have: below that a cross-validated AUC is mostly noise."""


def synthetic_share(is_synthetic: pd.Series, cap: float) -> GateResult:
    """Share of records flagged synthetic must not exceed ``cap`` (nulls count as not synthetic)."""
    flags = is_synthetic.fillna(False).astype(bool)
    value = float(flags.mean()) if len(flags) else 0.0
    return GateResult(name="synthetic_share", passed=value <= cap, value=value, threshold=cap,
                      comparison=Comparison.AT_MOST, sample_size=len(flags), worst=[])


@dataclass(frozen=True)
class C2STResult:
    """Cross-validated ROC AUC of a classifier told to separate real (0) from synthetic (1) rows.

    ``n_real`` and ``n_synthetic`` are the rows used, after balancing; ``passed`` is
    ``abs(auc - 0.5) <= tolerance``.
    """

    auc: float
    auc_std: float
    n_real: int
    n_synthetic: int
    passed: bool
    tolerance: float


def _features(text_field: str | None, numeric: Sequence[str], categorical: Sequence[str]) -> ColumnTransformer:
    from sklearn.compose import ColumnTransformer
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    transformers: list[tuple[str, object, str | list[str]]] = []
    if text_field is not None:
        # Character n-grams within word boundaries catch templates, spelling and formatting quirks of a
        # generator without a tokenizer or language model.
        transformers.append(
            ("text", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), min_df=2, sublinear_tf=True), text_field)
        )
    if numeric:
        # The missing-value indicator lets the classifier notice a generator that leaves values out.
        scaled = make_pipeline(SimpleImputer(strategy="median", add_indicator=True), StandardScaler())
        transformers.append(("numeric", scaled, list(numeric)))
    if categorical:
        transformers.append(
            (
                "categorical",
                make_pipeline(
                    SimpleImputer(strategy="constant", fill_value="<missing>"),
                    OneHotEncoder(handle_unknown="ignore"),
                ),
                list(categorical),
            )
        )
    return ColumnTransformer(transformers)


def _prepare(frame: pd.DataFrame, text_field: str | None, categorical: Sequence[str]) -> pd.DataFrame:
    prepared = frame.copy()
    if text_field is not None:
        prepared[text_field] = prepared[text_field].fillna("").astype(str)
    for name in categorical:
        prepared[name] = prepared[name].astype(object).where(prepared[name].notna(), "<missing>").astype(str)
    return prepared


def classifier_two_sample_test(
    real: pd.DataFrame,
    synthetic: pd.DataFrame,
    text_field: str | None = None,
    numeric: Sequence[str] = (),
    categorical: Sequence[str] = (),
    seed: int = 0,
    folds: int = 5,
    tolerance: float = 0.1,
) -> C2STResult:
    """Classifier two-sample test of ``real`` against ``synthetic`` on the given fields.

    Features: TF-IDF of character 2-4-grams of ``text_field``, standardised ``numeric`` columns (median-imputed,
    with missing-value indicators) and one-hot ``categorical`` columns. The larger side is subsampled
    (deterministically, from ``seed``) to the smaller one's size so that AUC 0.5 means "indistinguishable";
    the logistic regression is scored by
    stratified ``folds``-fold cross-validated ROC AUC, every transformer being fitted inside the folds.

    The classifier is linear, so it sees shifts in location, in category and n-gram frequencies and in
    missingness, but not a difference in spread alone (a synthetic column with the right mean and too small a
    variance); :func:`dagster_project.quality.drift.psi` per column covers that.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import Pipeline

    if text_field is None and not numeric and not categorical:
        raise ValueError("classifier_two_sample_test needs a text field, numeric or categorical columns")
    for side, frame in (("real", real), ("synthetic", synthetic)):
        if len(frame) < MIN_ROWS:
            raise ValueError(f"classifier two-sample test needs at least {MIN_ROWS} {side} rows, got {len(frame)}")
    if folds < 2:
        raise ValueError(f"need at least 2 folds, got {folds}")
    columns = ([text_field] if text_field is not None else []) + list(numeric) + list(categorical)
    n = min(len(real), len(synthetic))
    rng = np.random.default_rng(seed)
    sides = [frame[columns].iloc[np.sort(rng.choice(len(frame), size=n, replace=False))] for frame in (real, synthetic)]
    data = _prepare(pd.concat(sides, ignore_index=True), text_field, categorical)
    target = np.repeat([0, 1], n)
    model = Pipeline(
        [("features", _features(text_field, numeric, categorical)), ("classifier", LogisticRegression(max_iter=1000))]
    )
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = cross_val_score(model, data, target, cv=splitter, scoring="roc_auc")
    auc = float(np.mean(scores))
    return C2STResult(
        auc=auc,
        auc_std=float(np.std(scores)),
        n_real=n,
        n_synthetic=n,
        passed=abs(auc - 0.5) <= tolerance,
        tolerance=tolerance,
    )
