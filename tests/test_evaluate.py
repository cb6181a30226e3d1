"""Calibration figures of `bpsm evaluate`: the reliability table, ECE, routable shares."""

from __future__ import annotations

import pytest

from connector.evaluate import expected_calibration_error, largest_share, reliability

CONFIDENCES = [0.95, 0.95, 0.85, 0.85, 0.5, 0.5]
CORRECT = [True, True, True, False, False, True]


def test_reliability_bands_hold_count_mean_confidence_and_accuracy():
    bands = reliability(CONFIDENCES, CORRECT)
    assert [(b["low"], b["n"], b["confidence"], b["accuracy"]) for b in bands] == [
        (0.5, 2, 0.5, 0.5),
        (0.8, 2, 0.85, 0.5),
        (0.9, 2, 0.95, 1.0),
    ]
    assert reliability([1.0], [True])[0]["low"] == 0.9  # 1.0 is in the last band


def test_expected_calibration_error_weights_each_band_by_its_size():
    bands = reliability(CONFIDENCES, CORRECT)
    assert expected_calibration_error(bands, 6) == pytest.approx((2 * 0.05 + 2 * 0.35) / 6, 1e-3)
    assert expected_calibration_error([], 0) == 0.0


def test_largest_share_routed_at_an_accuracy_cuts_only_between_distinct_confidences():
    assert largest_share(CONFIDENCES, CORRECT, 0.95) == {
        "share": pytest.approx(1 / 3, 1e-3),
        "threshold": 0.95,
    }
    # The top four are right 3 times in 4: 0.75 is reached at threshold 0.85.
    assert largest_share(CONFIDENCES, CORRECT, 0.75) == {
        "share": pytest.approx(4 / 6, 1e-3),
        "threshold": 0.85,
    }
    # Tied confidences are taken together: 0.9 is never reached without the wrong 0.85.
    assert largest_share([0.9, 0.9], [True, False], 0.9) == {"share": 0.0, "threshold": None}
