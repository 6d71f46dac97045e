"""--dry-run calibration: measured once per machine and dtype, cached, used only for the shipped cost defaults."""

from __future__ import annotations

import json

import pytest

from delia.experiments import CostModel, expand
from delia.experiments import calibrate as cal
from delia.experiments.estimate import estimate


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DELIA_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _write(key, **cost):
    path = cal.calibration_path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"key": key, "cost": cost}))
    return path


def test_the_key_names_cpu_dtype_torch_and_threads(cache):
    key = cal.machine_key()
    assert set(key) == {"cpu", "dtype", "torch", "threads"} and key["dtype"] in ("bf16", "fp32", "fp16")
    assert cal.calibration_path(cal.machine_key("fp32")) != cal.calibration_path(cal.machine_key("bf16"))
    assert cal.calibration_path(key).parent == cache / "calibration"


def test_a_cached_calibration_replaces_only_the_shipped_defaults(cache, make_exp):
    assert cal.calibrated(CostModel()) == (CostModel(), None)  # nothing cached: the defaults
    path = _write(cal.machine_key(), sample_token=0.5, train_row=7.0, model_load=2.0, unknown_field=1.0)
    cost, source = cal.calibrated(CostModel())
    assert source == path and (cost.sample_token, cost.train_row, cost.model_load) == (0.5, 7.0, 2.0)
    assert cost.eval_token == CostModel().eval_token  # a field not in the file keeps its default
    own = CostModel(sample_token=0.01)
    assert cal.calibrated(own) == (own, None)  # a user's `cost:` wins
    # the row-length and early-stop settings (what `delia run` sets) are not rates: the calibration still applies
    shaped, source = cal.calibrated(CostModel(row_tokens=320.0, early_stop=0.5))
    assert source == path and shaped.train_row == 7.0 and (shaped.row_tokens, shaped.early_stop) == (320.0, 0.5)
    _write(cal.machine_key("fp16" if cal.machine_key()["dtype"] != "fp16" else "fp32"), sample_token=99.0)
    assert cal.calibrated(CostModel())[0].sample_token == 0.5  # another dtype's file is not this one's
    plan = expand(make_exp())
    sample = next(s for s in plan.steps if s.kind == "sample")
    budget = sample.config.get("max_new_tokens", 512)
    assert estimate(plan).per_step[sample.key] == pytest.approx(2.0 + sample.volatile["limit"] * budget * 0.5)


def test_calibrate_measures_and_caches(cache, tiny_dir):
    path = cal.calibrate(tiny_dir)
    saved = json.loads(path.read_text())
    assert saved["key"] == cal.machine_key()
    assert set(saved["cost"]) == {"sample_token", "eval_token", "train_row", "train_diverse_row", "score_row",
                                  "model_load"}
    assert all(v > 0 for v in saved["cost"].values())
    d = CostModel()  # the unmeasured fields keep the shipped defaults' ratios
    assert saved["cost"]["eval_token"] / saved["cost"]["sample_token"] == pytest.approx(d.eval_token / d.sample_token)
    assert cal.calibrated(CostModel())[1] == path
