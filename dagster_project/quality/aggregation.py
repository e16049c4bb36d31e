"""Turning several judgements per item into one label.

``majority_vote`` treats every judgement as equally good. ``dawid_skene`` does not: it estimates, without any gold
labels, a confusion matrix per annotator and the class prevalences by EM (Dawid & Skene 1979), and weighs each
judgement by how reliable its annotator has proved. That is what lets one careful annotator outvote several
careless ones, and it gives per-annotator quality for free.

The EM is written out here (about forty lines of numpy) rather than taken from a library: crowd-kit pulls in a
large dependency tree and initialises differently, and we want the paper's exact recipe -- soft vote-share
initialisation and repeated judgements by one annotator counted individually, as in Dawid & Skene's own data
(clinician 1 rated every patient three times) -- plus a deterministic result that the tests pin to the paper.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
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


@dataclass(frozen=True)
class DawidSkeneResult:
    """What ``dawid_skene`` estimated.

    * ``labels``: item_id -> most probable true class (ties go to the earlier class in ``class_prior``'s order).
    * ``posteriors``: items x classes, P(true class | all judgements); each row sums to 1.
    * ``class_prior``: class -> estimated prevalence; sums to 1.
    * ``confusion``: annotator_id -> DataFrame true class x given label, P(given | true); each row sums to 1.
    * ``log_likelihood``: log P(all judgements | estimated parameters), the quantity EM increases.
    * ``iterations``: EM iterations run (one M-step plus one E-step each).
    """

    labels: pd.Series
    posteriors: pd.DataFrame
    class_prior: pd.Series
    confusion: dict[Hashable, pd.DataFrame]
    log_likelihood: float
    iterations: int


def _m_step(
    weights: np.ndarray, item: np.ndarray, annotator: np.ndarray, given: np.ndarray, n_annotators: int
) -> tuple[np.ndarray, np.ndarray]:
    """Class prior and confusion tensor (annotator, true, given) from item-class weights, eq. 2.3-2.4 of the paper."""
    n_classes = weights.shape[1]
    prior = weights.mean(axis=0)
    cell = annotator * n_classes + given
    confusion = np.empty((n_annotators, n_classes, n_classes))
    for true in range(n_classes):
        confusion[:, true, :] = np.bincount(
            cell, weights=weights[item, true], minlength=n_annotators * n_classes
        ).reshape(n_annotators, n_classes)
    totals = confusion.sum(axis=2, keepdims=True)
    # A (annotator, true class) row with no weight at all -- the annotator judged no item that could be of that
    # class -- is 0/0. It is set uniform: the data say nothing about it, and rows must stay distributions. This
    # is the only adjustment; rows with data are the plain maximum-likelihood estimates, zeros included.
    return prior, np.divide(confusion, totals, out=np.full_like(confusion, 1.0 / n_classes), where=totals > 0)


def _e_step(
    prior: np.ndarray,
    confusion: np.ndarray,
    item: np.ndarray,
    annotator: np.ndarray,
    given: np.ndarray,
    n_items: int,
) -> tuple[np.ndarray, float]:
    """Posterior over true classes per item and the log-likelihood, eq. 2.5 and 2.7, in log space."""
    n_classes = prior.shape[0]
    with np.errstate(divide="ignore"):
        log_confusion = np.log(confusion)
        log_joint = np.tile(np.log(prior), (n_items, 1))
    # ``count`` is folded in by having one row per judgement: repeated judgements simply add up.
    contributions = log_confusion[annotator, :, given]
    for true in range(n_classes):
        log_joint[:, true] += np.bincount(item, weights=contributions[:, true], minlength=n_items)
    from scipy.special import logsumexp  # here, not at the top: loading the code location need not import scipy

    log_evidence = logsumexp(log_joint, axis=1, keepdims=True)
    return np.exp(log_joint - log_evidence), float(log_evidence.sum())


def dawid_skene(
    annotations: pd.DataFrame,
    max_iter: int = 100,
    tol: float = 1e-6,
    classes: Sequence[Hashable] | None = None,
) -> DawidSkeneResult:
    """Dawid & Skene (1979) EM estimates of true labels, class prevalences and per-annotator confusion matrices.

    * Initialisation: each item's vote shares (soft majority vote), as in section 3 of the paper.
    * Every judgement counts, including repeated judgements by the same annotator on the same item.
    * Iterates M-step then E-step until the largest change in any prior or confusion entry is below ``tol``, or
      ``max_iter`` iterations. The result's parameters are the last M-step's; posteriors are their E-step.
    * ``classes`` fixes the class set and order (it must contain every label seen); default: sorted labels seen.
    * Deterministic: no random start; items are ordered by ``item_id``, annotators by ``annotator_id``.
    * An empty frame gives empty labels/posteriors, a NaN prior, no confusion matrices and 0 iterations.
    """
    if max_iter < 1:
        raise ValueError("dawid_skene: max_iter must be at least 1")
    if classes is None:
        class_index = pd.Index(sorted(annotations["label"].unique()))
    else:
        class_index = pd.Index(list(classes))
        if class_index.has_duplicates:
            raise ValueError("dawid_skene: `classes` has duplicates")
        unknown = annotations.loc[~annotations["label"].isin(class_index), "label"].unique().tolist()
        if unknown:
            raise ValueError(f"dawid_skene: labels not in `classes`: {', '.join(map(repr, unknown[:5]))}")

    if annotations.empty:
        return DawidSkeneResult(
            labels=pd.Series(dtype=object, name="label").rename_axis("item_id"),
            posteriors=pd.DataFrame(columns=class_index, dtype=float).rename_axis("item_id"),
            class_prior=pd.Series(np.nan, index=class_index, name="prior"),
            confusion={},
            log_likelihood=0.0,
            iterations=0,
        )
    if len(class_index) < 1:
        raise ValueError("dawid_skene: no classes")

    item_ids = pd.Index(sorted(annotations["item_id"].unique()))
    annotator_ids = pd.Index(sorted(annotations["annotator_id"].unique()))
    item = item_ids.get_indexer(annotations["item_id"])
    annotator = annotator_ids.get_indexer(annotations["annotator_id"])
    given = class_index.get_indexer(annotations["label"])
    n_items, n_annotators, n_classes = len(item_ids), len(annotator_ids), len(class_index)

    votes = np.zeros((n_items, n_classes))
    np.add.at(votes, (item, given), 1.0)
    posteriors = votes / votes.sum(axis=1, keepdims=True)

    prior = np.full(n_classes, np.nan)
    confusion = np.full((n_annotators, n_classes, n_classes), np.nan)
    log_likelihood = float("nan")
    iterations = 0
    for iterations in range(1, max_iter + 1):
        new_prior, new_confusion = _m_step(posteriors, item, annotator, given, n_annotators)
        posteriors, log_likelihood = _e_step(new_prior, new_confusion, item, annotator, given, n_items)
        converged = iterations > 1 and (
            np.max(np.abs(new_prior - prior)) < tol and np.max(np.abs(new_confusion - confusion)) < tol
        )
        prior, confusion = new_prior, new_confusion
        if converged:
            break

    posterior_frame = pd.DataFrame(posteriors, index=item_ids.rename("item_id"), columns=class_index)
    return DawidSkeneResult(
        labels=pd.Series(class_index[posteriors.argmax(axis=1)], index=posterior_frame.index, name="label"),
        posteriors=posterior_frame,
        class_prior=pd.Series(prior, index=class_index, name="prior"),
        confusion={
            annotator_id: pd.DataFrame(
                confusion[k], index=class_index.rename("true"), columns=class_index.rename("given")
            )
            for k, annotator_id in enumerate(annotator_ids)
        },
        log_likelihood=log_likelihood,
        iterations=iterations,
    )
