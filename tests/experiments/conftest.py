"""Fixtures: experiment configs on the shared data in a temp dir, and fake stages that count their calls."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from delia.config import from_dict
from delia.experiments import ExperimentConfig, stages


@pytest.fixture
def make_exp(tmp_path, shared_data):
    """ExperimentConfig factory: shared data files (absolute paths), output under tmp_path."""

    def make(**over) -> ExperimentConfig:
        base = {"name": "t", "out": str(tmp_path / "exp"),
                "data": {"train": str(shared_data / "halu/train.jsonl"), "test": str(shared_data / "halu/test.jsonl"),
                         "valid": str(shared_data / "halu/valid.jsonl"),
                         "queries": str(shared_data / "diverse/alpaca_5000.jsonl")},
                "grid": {"methods": ["original", "cit", "delia"], "sizes": [30], "ratios": [2.0], "seeds": [42]},
                "eval": {"limit": 4, "halu": {"instructions": "seen:1,unseen:1",
                                              "seen_file": str(shared_data / "halu/train.jsonl"),
                                              "unseen_file": str(shared_data / "halu/instructions_unseen.txt")}},
                "valid_eval": {"halu": {"seen_file": str(shared_data / "halu/train.jsonl")}}}
        for k, v in over.items():
            base[k] = {**base[k], **v} if isinstance(v, dict) and isinstance(base.get(k), dict) else v
        return from_dict(ExperimentConfig, base)

    return make


def fake_prediction(set_name: str, i: int, valid: bool) -> dict:
    """A predictions.jsonl row: example e<i> under one phrasing; gold 'no' for e0-e6 (majority class 70%).
    A valid reply answers 'no'; an invalid one is prose cut at the budget."""
    return {"example_id": f"e{i}", "instruction_id": f"{set_name}/0", "set": set_name,
            "raw": "{'thought': 't', 'hallucination': 'no'}" if valid else "The response",
            "finish_reason": "stop" if valid else "length", "n_new_tokens": 12 if valid else 64,
            "parsed": valid, "strict": valid, "pred_label": "no" if valid else None,
            "gold_label": "no" if i < 7 else "yes", "reason": None if valid else "no '{' in the output"}


class FakeStages:
    """Stand-ins for the heavy stages: write the files the next step reads, record every call."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.log: list[tuple[str, Path]] = []
        self.fail_on: set[str] = set()
        self.cut_every = 0  # sample: every n-th answer (0, n, 2n, ...) is cut at the budget (finish_reason length)
        self.valid_score = None  # train: rows -> the validation score of the kept step (None: no selection)

    def __call__(self, kind: str):
        def run(config, inputs, out: Path):
            self.calls[kind] += 1
            self.log.append((kind, out))
            if kind in self.fail_on:
                raise RuntimeError(f"fake {kind} failure")
            if kind == "sample":
                from delia.sampling import load_queries

                cut = self.cut_every
                rows = [{"id": q.id, "messages": [{"role": "user", "content": q.text},
                                                  {"role": "assistant", "content": "ok"}],
                         "meta": {"params": {"max_new_tokens": 16},
                                  "finish_reason": "length" if cut and i % cut == 0 else "stop"}}
                        for i, q in enumerate(load_queries(config["queries"], config["limit"]))]
                (out / "cache.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            elif kind == "build":
                n = sum(1 for _ in open(inputs["downstream"] / "data.jsonl"))
                rows = [{"id": f"r{i}", "source": "downstream"} for i in range(n)]
                rows += [{"id": f"d{i}", "source": "diverse"} for i in range(int(config["ratio"] * n))]
                (out / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
                (out / "manifest.json").write_text('{"special_tokens": ["<sep>"]}')
            elif kind == "train":
                # a fake "quality" that grows with the data size, so reports have something to order
                rows = sum(1 for _ in open(inputs["data"] / "train.jsonl"))
                sel = ({"selection": {"best_step": 1, "last_step": 2, "metric": "label_accuracy",
                                      "score": self.valid_score(rows), "task_valid": 1.0}}
                       if self.valid_score else {})
                (out / "delia_run.json").write_text(json.dumps({"train_loss": 1.0 / rows, "global_step": 2,
                                                                "data": {"rows": rows}, **sel}))
            elif kind == "eval":
                quality = 0.5 if "adapter" in inputs else 0.0
                preds = [fake_prediction(s, i, i < int(10 * quality)) for s in ("seen", "unseen") for i in range(10)]
                (out / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds))
                fa = {"value": quality, "ci_low": 0.0, "ci_high": 1.0, "n": 10}
                (out / "metrics.json").write_text(json.dumps({
                    "sets": {"seen": {"format_accuracy": fa}, "unseen": {"format_accuracy": fa}},
                    "scoring": {"own": {"loss": 2.0 - quality, "state_space_exp_entropy_geomean": 10 - quality}},
                    "hidden": {"summary": {"json": {"first": 1.0, "middle": 2.0, "last": 3.0},
                                           "thought": {"first": 1.0, "middle": 3.0, "last": 4.0},
                                           "mean": {"middle": 2.5}},
                               "l2": {"json": [1.0, 2.0], "thought": [1.0, 3.0]}}}))
            return {"fake": kind}

        return run


@pytest.fixture
def fake_stages(monkeypatch):
    fake = FakeStages()
    for kind in ("sample", "build", "train", "eval"):
        monkeypatch.setitem(stages.RUNNERS, kind, fake(kind))
    return fake
