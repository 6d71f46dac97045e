"""Step keys are cache addresses: a finished grid (e.g. a long experiment still running) stays valid only while
every step keeps its key. This pins the keys of a small reference plan on the packaged data; a change that moves
any of them reruns finished work and must be deliberate (then update the keys here and say why)."""

from __future__ import annotations

from delia.config import from_dict
from delia.experiments import ExperimentConfig, expand

# configs/halu100.yaml's stage settings at 30 rows, ratio 3, one seed, with a few baselines
REFERENCE = {"name": "ref", "model": "smollm2-135m-instruct",
             "grid": {"methods": ["original", "cit", "delia", "neftune", "dmt", "icl", "wo_all"], "sizes": [30],
                      "ratios": [3], "seeds": [1]},
             "methods": {"neftune": {"alpha": 5}, "dmt": {"k": 0.0039}, "icl": {"k": 2}},
             "sample": {"max_new_tokens": 256}, "sample_margin": 0.3,
             "train": {"max_length": 640, "learning_rate": 1.0e-3, "batch_size": 8, "epochs": 2, "warmup_steps": 0},
             "eval": {"halu": {"instructions": "seen:1,unseen:1"}, "generation": {"max_new_tokens": 320}}}

# Computed on main at 3503cc8 (identical there for every run but wo_all, whose test evaluation now scores "seen"
# on its own fixed instruction: the subset edbd3de9d21b).
RUNS = {
    "original/base": {"test": "eval/8a9c761283d7", "valid": "eval/1387a427ae78"},
    "cit/seed1-size30": {"test": "eval/00d760762957", "valid": "eval/3eadf0cc6a99", "train": "train/4de0a533071d"},
    "delia/ratio3-seed1-size30": {"test": "eval/3e21f0de536e", "valid": "eval/60af9d86196f",
                                  "train": "train/a48673db4c0b"},
    "neftune/seed1-size30": {"test": "eval/a17e5b341fbc", "valid": "eval/477fd15460aa",
                             "train": "train/7479aee3563c"},
    "dmt/ratio3-seed1-size30": {"test": "eval/5af43df99639", "valid": "eval/80a4d3b4de7d",
                                "train": "train/9d200073f510"},
    "icl/base": {"test": "eval/24ed0f1dab45", "valid": "eval/7a9f06adefc7"},
    "wo_all/seed1-size30": {"test": "eval/716115636bf7", "valid": "eval/e1cf47d7d889", "train": "train/0b8efcf334da"},
}
DATA_STEPS = ["build/b64bfaf3e1a1", "build/bb9205327536", "build/d2dc6fa61c3b", "sample/b9b68b429767",
              "slice/b69a3001ad53", "subset/9e07fec32f6c", "subset/edbd3de9d21b", "transform/4f62faaa2a4b"]


def test_the_reference_plans_step_keys_do_not_move():
    plan = expand(from_dict(ExperimentConfig, REFERENCE))
    assert {r.id: {n: f"{s.kind}/{s.key}" for n, s in r.steps.items()} for r in plan.runs} == RUNS
    named = {k for steps in RUNS.values() for k in steps.values()}
    assert sorted(f"{s.kind}/{s.key}" for s in plan.steps if f"{s.kind}/{s.key}" not in named) == DATA_STEPS
