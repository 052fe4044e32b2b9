"""Estimated accuracy (CBPE), the Wilson interval and the accuracy-drop rule, against known values."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.monitor.accuracy import accuracy_drop, expected_accuracy, measured, wilson_interval


def test_cbpe_is_the_mean_probability_that_each_verdict_is_right():
    p = np.array([0.9, 0.2, 0.6, 0.5])
    # fake verdicts (p >= 0.5) are right with p, real ones with 1 - p
    assert expected_accuracy(p, 0.5) == pytest.approx((0.9 + 0.8 + 0.6 + 0.5) / 4)
    assert expected_accuracy(p, 0.7) == pytest.approx((0.9 + 0.8 + 0.4 + 0.5) / 4)
    assert expected_accuracy(np.array([]), 0.5) is None


def test_cbpe_matches_measured_accuracy_when_the_scores_are_calibrated():
    rng = np.random.default_rng(0)
    p = rng.beta(0.4, 0.4, 200_000)
    fake = rng.random(len(p)) < p  # calibrated: P(fake | p) = p
    assert expected_accuracy(p, 0.5) == pytest.approx(np.mean((p >= 0.5) == fake), abs=0.003)


def test_wilson_interval_known_values():
    low, high = wilson_interval(8, 10)  # a textbook case
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)
    low, high = wilson_interval(0, 20)
    assert low == pytest.approx(0.0, abs=1e-12) and round(high, 4) == 0.1611
    assert wilson_interval(0, 0) is None
    assert measured(0, 0) == {"n": 0, "right": 0, "accuracy": None, "low": None, "high": None}


def test_a_drop_needs_enough_labels_and_the_whole_interval_below_the_bound():
    rule = {"min_labels": 30, "max_drop": 0.05, "confidence": 0.95}
    few = accuracy_drop({"audit": [10, 2]}, ("audit",), 0.9, **rule)
    assert not few["dropped"] and "10 labels" in few["reason"]
    # 60 % right on 40 labels: interval [0.45, 0.74], all below 0.9 - 0.05
    clear = accuracy_drop({"audit": [40, 24], "near_threshold": [100, 0]}, ("audit",), 0.9, **rule)
    assert clear["dropped"] and clear["n"] == 40 and clear["high"] < 0.85
    # 80 % right on 40 labels: the interval reaches above 0.85: not a drop yet
    unsure = accuracy_drop({"audit": [40, 32]}, ("audit",), 0.9, **rule)
    assert not unsure["dropped"] and unsure["high"] > 0.85 and "not below" in unsure["reason"]
    # hard cases (near the threshold) are not counted unless asked for
    assert accuracy_drop({"near_threshold": [100, 10]}, ("audit",), 0.9, **rule)["n"] == 0
    assert not accuracy_drop({"audit": [40, 0]}, ("audit",), None, **rule)["dropped"]
