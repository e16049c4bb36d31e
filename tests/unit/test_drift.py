"""Drift: PSI on hand-computed cases, and planted shifts the report must catch while a clean resample passes."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from dagster_project.quality.drift import PSI_EPSILON, REPORT_COLUMNS, drift_check, drift_report, label_drift, psi

# ------------------------------------------------------------------------------------------ PSI by hand


def test_psi_categorical_hand_computed() -> None:
    # 50/50 -> 75/25: (0.75 - 0.5) ln(0.75/0.5) + (0.25 - 0.5) ln(0.25/0.5) = 0.25 ln 1.5 + 0.25 ln 2 = 0.25 ln 3
    expected = pd.Series(["a"] * 50 + ["b"] * 50)
    actual = pd.Series(["a"] * 75 + ["b"] * 25)
    assert psi(expected, actual) == pytest.approx(0.25 * math.log(3))


def test_psi_numeric_quantile_bins_hand_computed() -> None:
    # Reference 0..99 with 4 bins: cut points at its quantiles 24.75, 49.5, 74.25 -> 25 values per bin.
    # Current 0..49 fills the first two bins (shares 0.5, 0.5) and leaves two empty (floored at 1e-4):
    # 2 (0.5 - 0.25) ln(0.5 / 0.25) + 2 (1e-4 - 0.25) ln(1e-4 / 0.25)
    expected = pd.Series(np.arange(100))
    actual = pd.Series(np.arange(50))
    by_hand = 2 * 0.25 * math.log(2) + 2 * (PSI_EPSILON - 0.25) * math.log(PSI_EPSILON / 0.25)
    assert psi(expected, actual, bins=4) == pytest.approx(by_hand)
    assert by_hand == pytest.approx(4.257, abs=1e-3)


def test_psi_of_identical_series_is_zero_and_nulls_are_ignored() -> None:
    values = pd.Series(np.linspace(0, 1, 200))
    assert psi(values, values) == 0.0
    with_nulls = pd.concat([values, pd.Series([np.nan] * 50)], ignore_index=True)
    assert psi(values, with_nulls) == 0.0
    assert math.isnan(psi(values, pd.Series([], dtype=float)))


def test_psi_constant_reference_still_sees_a_move() -> None:
    # Reference all 5: bins "<= 5" and "> 5". Current all 6: shares (1, 0) -> (0, 1), both floored at 1e-4:
    # (1e-4 - 1) ln(1e-4) + (1 - 1e-4) ln(1 / 1e-4) = 2 (1 - 1e-4) ln(1e4)
    assert psi(pd.Series([5.0] * 30), pd.Series([6.0] * 30)) == pytest.approx(2 * (1 - 1e-4) * math.log(1e4))


def test_psi_new_category_counts_heavily() -> None:
    # "c" appears in 10% of the current batch: its share goes from the 1e-4 floor to 0.1 on its own.
    expected = pd.Series(["a"] * 50 + ["b"] * 50)
    actual = pd.Series(["a"] * 45 + ["b"] * 45 + ["c"] * 10)
    contribution_c = (0.1 - PSI_EPSILON) * math.log(0.1 / PSI_EPSILON)
    contribution_ab = 2 * (0.45 - 0.5) * math.log(0.45 / 0.5)
    assert psi(expected, actual) == pytest.approx(contribution_c + contribution_ab)


def test_psi_needs_two_bins() -> None:
    with pytest.raises(ValueError, match="bins"):
        psi(pd.Series([1.0, 2.0]), pd.Series([1.0]), bins=1)


# ------------------------------------------------------------------------------------------ planted shifts


def batch(rng: np.random.Generator, n: int, mean: float = 0.0, channel_p: tuple[float, ...] = (0.5, 0.3, 0.2)):
    return pd.DataFrame(
        {
            "amount": rng.normal(mean, 1.0, n),
            "length": rng.poisson(40, n),
            "channel": rng.choice(["email", "chat", "phone"], size=n, p=list(channel_p)),
        }
    )


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return batch(np.random.default_rng(1), 5000)


def test_clean_resample_passes(reference: pd.DataFrame) -> None:
    current = batch(np.random.default_rng(2), 5000)
    report = drift_report(reference, current, numeric=["amount", "length"], categorical=["channel"])
    assert list(report.columns) == REPORT_COLUMNS
    assert report["feature"].tolist() == ["amount", "length", "channel"]
    assert report["test"].tolist() == ["ks", "ks", "chi2"]
    assert (report["psi"] < 0.1).all(), report
    assert (report["p_value"] > 0.001).all(), report
    outcome = drift_check(report)
    # No feature's test is significant, so nothing counts as drift (value 0); without the test, value = max PSI.
    assert outcome.passed and outcome.value == 0.0 and outcome.sample_size == 5000
    assert drift_check(report, alpha=None).value == report["psi"].max()


def test_small_samples_need_a_significant_test_as_well_as_a_high_psi() -> None:
    """Two samples of 40 from one distribution: PSI on ten bins is noisy (often > 0.2), the KS test is not."""
    rng = np.random.default_rng(5)
    reference = pd.DataFrame({"x": rng.normal(size=40)})
    current = pd.DataFrame({"x": rng.normal(size=40)})
    report = drift_report(reference, current, numeric=["x"], categorical=[])
    assert report["psi"].iloc[0] > 0.2 and report["p_value"].iloc[0] > 0.01, report
    assert drift_check(report).passed
    assert not drift_check(report, alpha=None).passed
    shifted = pd.DataFrame({"x": rng.normal(loc=2.0, size=40)})
    assert not drift_check(drift_report(reference, shifted, numeric=["x"], categorical=[])).passed


def test_mean_shift_of_one_sd_fails(reference: pd.DataFrame) -> None:
    current = batch(np.random.default_rng(3), 5000, mean=1.0)
    report = drift_report(reference, current, numeric=["amount", "length"], categorical=["channel"]).set_index(
        "feature"
    )
    assert report.loc["amount", "psi"] > 0.2
    assert report.loc["amount", "p_value"] < 0.001
    assert report.loc["channel", "psi"] < 0.1 and report.loc["length", "psi"] < 0.1


def test_collapsed_category_fails(reference: pd.DataFrame) -> None:
    current = batch(np.random.default_rng(4), 5000, channel_p=(0.625, 0.375, 0.0))  # "phone" disappeared
    report = drift_report(reference, current, numeric=["amount"], categorical=["channel"])
    channel = report.set_index("feature").loc["channel"]
    assert channel["psi"] > 0.2 and channel["p_value"] < 0.001
    outcome = drift_check(report, max_psi=0.2)
    assert not outcome.passed and outcome.comparison == "<="
    assert outcome.value == pytest.approx(channel["psi"])
    assert [w["feature"] for w in outcome.worst] == ["channel", "amount"]


def test_drift_check_of_an_empty_report_passes() -> None:
    outcome = drift_check(pd.DataFrame(columns=REPORT_COLUMNS))
    assert outcome.passed and outcome.value == 0.0 and outcome.worst == [] and outcome.sample_size == 0


# ------------------------------------------------------------------------------------------ labels


def test_label_drift_hand_computed() -> None:
    reference = pd.Series(["a"] * 50 + ["b"] * 50)
    current = pd.Series(["a"] * 75 + ["b"] * 25)
    result = label_drift(reference, current, classes=["a", "b", "c"])
    # "c" is in neither: it adds nothing to PSI and is left out of the contingency table.
    assert result["psi"] == pytest.approx(0.25 * math.log(3))
    # 2x2 table [[50, 50], [75, 25]]: expected 62.5 and 37.5 per row; SciPy applies Yates' correction for one
    # degree of freedom: 2 (12.5 - 0.5)^2 / 62.5 + 2 (12.5 - 0.5)^2 / 37.5 = 4.608 + 7.68 = 12.288
    assert result["chi2"] == pytest.approx(12.288)
    assert result["p_value"] == pytest.approx(4.56e-4, rel=0.01)


def test_label_drift_without_change() -> None:
    labels = pd.Series(["a", "b", "c"] * 30)
    result = label_drift(labels, labels.sample(frac=1, random_state=0), classes=["a", "b", "c"])
    assert result == {"psi": 0.0, "chi2": 0.0, "p_value": 1.0}
