"""Optional BLEURT/COMET: clear errors when the checkpoint or package is missing (no checkpoints here)."""

import importlib.util

import pytest

from delia.evaluation.neural import MetricUnavailable, bleurt_scores, comet_scores


def test_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(MetricUnavailable, match=r"BLEURT checkpoint not found: .*nope"):
        bleurt_scores(["a"], ["b"], str(tmp_path / "nope"))
    with pytest.raises(MetricUnavailable, match=r"COMET checkpoint not found"):
        comet_scores(["s"], ["a"], ["b"], str(tmp_path / "nope.ckpt"))


@pytest.mark.skipif(importlib.util.find_spec("bleurt_pytorch") is not None, reason="bleurt-pytorch is installed")
def test_missing_package_says_what_to_install(tmp_path):
    with pytest.raises(MetricUnavailable, match="bleurt-pytorch"):
        bleurt_scores(["a"], ["b"], str(tmp_path))


def test_missing_metric_is_a_user_error():
    from delia.errors import USER_ERRORS

    assert issubclass(MetricUnavailable, USER_ERRORS)
