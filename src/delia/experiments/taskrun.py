"""`delia run TASK.yaml`: compile a user's task into data files and an ordinary experiment config.

OUT/data/ gets train.jsonl (chat rows under your own instruction + format, what `plain` trains on; `cit` and
`delia` give each row a seeded, balanced draw of the seen phrasings at build time), test.jsonl ({id, input,
output}: the held-out rows), instructions_seen.txt, instructions_unseen.txt (never in a training row),
paraphrases.txt and task.json (what was inferred, the split, the phrasings). OUT/experiment.yaml is an
`ExperimentConfig`, so `delia experiment OUT/experiment.yaml` reruns the same steps, and rerunning `delia run`
resumes (steps are named by content). Everything is checked before anything is written.
"""

from __future__ import annotations

import functools
import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from delia.config import ConfigError, merge, to_dict
from delia.data import DataError, Problem
from delia.diversify.apply import Template
from delia.experiments.usertask import (Example, UserTask, count, infer, label_of, read_examples, split_phrasings,
                                        split_rows)
from delia.files import write_text_atomic

# Small-data defaults (the CPU recipe of configs/halu100.yaml): the paper's recipe (lr 2e-4, batch 16, 25 warm-up
# steps, 1 epoch) gives ~100 rows 2-3 optimizer steps inside warm-up, and the model does not move.
TRAIN = {"max_length": 512, "learning_rate": 1.0e-3, "batch_size": 8, "epochs": 2, "warmup_steps": 0,
         "report_to": ["none"], "save_steps": 100}
SAMPLE = {"max_new_tokens": 192, "engine_options": {"batch_size": 16}}
# Model selection (docs/RESULTS.md, "Model selection"): validate about 10 times a run, stop after 3 validations
# without improvement, keep the best step. The step budget is sized by the data (`train_budget`).
VALIDATION = {"patience": 3}
# Validation prompts per validation: each validation row under enough validation phrasings to give about this many
# prompts (all phrasings when the rows are few), so a validation costs seconds whatever the task's size.
VALID_PROMPTS = 40
MIN_STEPS, MAX_EPOCHS = 40, 30
# Drift from the base on held-out general queries (the last rows of the diverse pool, never self-sampled).
DRIFT = {"queries": 32, "max_new_tokens": 128}
# Every held-out phrasing on every test row (per-phrasing robustness), and one with the format description written
# out in place of the token (`unseen-desc`): the fair test for `plain`, which never learned the token.
EVAL_INSTRUCTIONS = "seen:1,unseen:all"
EVAL_DESC = ",unseen-desc:1"
# The teacher-forced analyses (loss and first-token state space over every test prompt) cost a second forward pass
# over the test set, as much as generating the replies; `delia run` leaves them to `eval: {analysis: {score: on}}`.
EVAL_ANALYSIS = {"score": "off"}
# The test budget when the task gives none: max(64, 2 x p99 of the gold replies' tokens) (not the library's floor
# of 256: a label reply is ~10 tokens, and an untuned model's ramble costs the budget on every prompt). A reply cut
# there is counted as `cut_at_budget` in the report, not hidden.
EVAL_BUDGET_FLOOR = 64
# `--dry-run` estimates sized by the rows' length (the cost model's rates are for halu's ~320-token rows) and by
# early stopping (validated runs trained 30-50% of their step budget on langid; docs/RESULTS.md)
COST = {"row_tokens": 320.0, "early_stop": 0.5}


@dataclass
class Compiled:
    """What `compile_task` wrote (or would write): the experiment config and the task summary."""

    out: Path
    experiment: dict[str, Any]
    info: dict[str, Any]


def phrasing_key(task: UserTask) -> str:
    """A hash of everything the generated phrasings depend on (the task's paraphrase settings and texts)."""
    from delia.config import config_hash

    return config_hash({"paraphrase": to_dict(task.paraphrase), "instruction": task.instruction,
                        "format": task.format, "token": task.token})


def make_phrasings(task: UserTask, complete=None) -> list[str]:
    """The task's phrasings: the `paraphrases` file, or `paraphrase.n` made by the grammar / an LLM, each naming
    the format only through the token. `complete` replaces the LLM endpoint (tests).

    Phrasings made earlier for the same settings (OUT/data/task.json's key) are reused, so a rerun of an LLM
    paraphrased task resumes its finished steps instead of asking the endpoint for new phrasings.
    """
    from delia.mixing.build import load_variants

    if task.paraphrases:
        return load_variants(task.paraphrases, task.token)  # every line must hold the token (FILE:LINE errors)
    data = Path(task.out_dir) / "data"
    if (data / "task.json").is_file() and (data / "paraphrases.txt").is_file():
        earlier = json.loads((data / "task.json").read_text(encoding="utf-8"))
        if earlier.get("phrasings", {}).get("key") == phrasing_key(task):
            return load_variants(str(data / "paraphrases.txt"), task.token)
    from delia.diversify.stage import DiversifyConfig, run_diversify
    from delia.config import from_dict

    p = task.paraphrase
    if p.engine == "grammar":  # a task clause: the grammar adds its own format clause with the token
        fields = {"task": [task.instruction.strip().rstrip(".?!")]}
    else:
        fields = {"task": [task.plain_instruction], "format_text": task.format.strip(), "llm": to_dict(p.llm)}
    with tempfile.TemporaryDirectory() as tmp:  # run_diversify writes its list; nothing lands in OUT on failure
        cfg = from_dict(DiversifyConfig, {**p.filters, **fields, "out": str(Path(tmp) / "p.txt"), "method": p.engine,
                                          "n": p.n, "token": task.token, "seed": p.seed, "tokenizer_model": ""},
                        where="paraphrase")
        return list(run_diversify(cfg, complete=complete).variants)


def _check_layout(task: UserTask, rows: list[Example], phrasings: list[str]) -> None:
    """Every user turn must parse back into (input, phrasing) through the template, as the build reads it."""
    t = Template(task.template)
    problems = []
    for text in phrasings + ([task.plain_instruction] if task.plain_instruction else []):
        if t.parse(t.render("x", text)) != (("x" if "{context}" in task.template else ""), text):
            problems.append(Problem("phrasings", 0, f"{text[:60]!r} cannot be read back through the template "
                                                    f"{task.template!r} (does it contain its separator?)"))
    for e in rows:
        if t.parse(t.render(e.input, phrasings[0])) != (e.input, phrasings[0]):
            problems.append(Problem(e.source, e.line, f"the user turn cannot be split back with the template "
                                                      f"{task.template!r}", "input"))
    if problems:
        raise DataError(problems)


def compile_task(task: UserTask, complete=None, write: bool = True) -> Compiled:
    """Check the task, split it, and write OUT/data/* and OUT/experiment.yaml (when `write`).

    Returns:
        The Compiled task. Raises DataError / ConfigError (FILE:LINE: field: reason) before writing anything.
    """
    # Read, infer and split (pure; every check happens here).
    rows = read_examples(task.examples)
    info = infer(task, rows)
    h = task.holdout
    train_idx, test_idx = split_rows(rows, count(h.rows, len(rows), "rows"), h.seed,
                                     [label_of(info, e) for e in rows])
    valid_idx: list[int] = []
    labels = [label_of(info, e) for e in rows]
    if h.validates:  # validation rows come out of the training rows: neither trained on nor tested on
        keep, valid_pos = split_rows([rows[i] for i in train_idx], count(h.valid_rows, len(train_idx), "valid_rows",
                                                                          least=2),
                                     h.seed + 1, [labels[i] for i in train_idx])
        train_idx, valid_idx = [train_idx[i] for i in keep], [train_idx[i] for i in valid_pos]
        _check_valid_classes(rows, labels, train_idx, valid_idx)
    phrasings = make_phrasings(task, complete)
    if len(phrasings) != len(set(phrasings)):
        raise ConfigError("paraphrases: repeated phrasings")
    seen, unseen = split_phrasings(phrasings, count(h.phrasings, len(phrasings), "phrasings"), h.seed)
    valid_phr: list[str] = []
    if h.validates:  # validation phrasings come out of the seen ones: never in a training row, not unseen ones
        seen, valid_phr = split_phrasings(seen, count(h.valid_phrasings, len(seen), "valid_phrasings"), h.seed + 1)
    _check_layout(task, rows, phrasings)
    _check_budget(task, rows)
    out = Path(task.out_dir)
    data = out / "data"
    first = task.plain_instruction or seen[0]
    tpl = Template(task.template)
    train_rows = [{"id": rows[i].id, "messages": [{"role": "user", "content": tpl.render(rows[i].input, first)},
                                                  {"role": "assistant", "content": rows[i].output}]}
                  for i in train_idx]
    test_rows = [{"id": rows[i].id, "input": rows[i].input, "output": rows[i].output} for i in test_idx]
    valid_rows = [{"id": rows[i].id, "input": rows[i].input, "output": rows[i].output} for i in valid_idx]
    summary = {"name": task.name, "examples": task.examples, "rows": len(rows), "train_rows": len(train_idx),
               "test_rows": len(test_idx), **info, "holdout": to_dict(h),
               "valid_rows": len(valid_idx),
               "train_ids": [rows[i].id for i in train_idx], "test_ids": [rows[i].id for i in test_idx],
               "valid_ids": [rows[i].id for i in valid_idx],
               "label_counts": _counts(info, rows, train_idx, test_idx, valid_idx),
               "plain_instruction": task.plain_instruction,
               "format": task.format, "token": task.token, "template": task.template,
               "phrasings": {"source": task.paraphrases or f"paraphrase.engine={task.paraphrase.engine}",
                             "key": None if task.paraphrases else phrasing_key(task),
                             "seen": seen, "valid": valid_phr, "unseen": unseen},
               "methods": task.method_list}
    exp = experiment_dict(task, info, data, len(train_idx), valid=(len(valid_idx), len(valid_phr)))
    _validate(exp)
    if write:
        data.mkdir(parents=True, exist_ok=True)
        _jsonl(data / "train.jsonl", train_rows)
        _jsonl(data / "test.jsonl", test_rows)
        files = [("paraphrases", phrasings), ("instructions_seen", seen), ("instructions_unseen", unseen)]
        if valid_idx:
            _jsonl(data / "valid.jsonl", valid_rows)
            files.append(("instructions_valid", valid_phr))
        for name, lines in files:
            write_text_atomic(data / f"{name}.txt", "".join(p + "\n" for p in lines))
        write_text_atomic(data / "task.json", json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
        write_text_atomic(out / "experiment.yaml", yaml.safe_dump(exp, sort_keys=False, allow_unicode=True))
    return Compiled(out, exp, summary)


def _counts(info: dict[str, Any], rows: list[Example], train: list[int], test: list[int],
            valid: list[int]) -> dict[str, Any] | None:
    if label_of(info, rows[0]) is None:
        return None
    tally = lambda idx: {k: sum(label_of(info, rows[i]) == k for i in idx)  # noqa: E731
                         for k in sorted({label_of(info, e) for e in rows})}
    return {"train": tally(train), "test": tally(test), **({"valid": tally(valid)} if valid else {})}


def _check_valid_classes(rows: list[Example], labels: list[str | None], train: list[int], valid: list[int]) -> None:
    """A labelled task needs every side of the split to see more than one class, or selection means nothing."""
    if labels[0] is None:
        return
    classes = {labels[i] for i in train + valid}
    for side, idx in (("validation", valid), ("training", train)):
        if len(classes) > 1 and len({labels[i] for i in idx}) < 2:
            raise DataError([Problem(rows[idx[0]].source, rows[idx[0]].line,
                                     f"the {side} rows hold one label only ({labels[idx[0]]!r}) of {sorted(classes)}; "
                                     f"give more rows of the other labels or a larger holdout.valid_rows",
                                     "output")])


def _check_budget(task: UserTask, rows: list[Example]) -> None:
    """A test budget the task sets (`eval.generation.max_new_tokens`) must fit its longest gold reply and the
    end-of-turn token, or every such reply would be cut and the budget would decide the scores."""
    budget = (task.eval.get("generation") or {}).get("max_new_tokens")
    if not budget:
        return
    tok = _tokenizer(task.model)
    n, longest = max(((len(tok(e.output, add_special_tokens=False)["input_ids"]), e) for e in rows),
                     key=lambda x: x[0])
    if n + 1 > budget:
        raise DataError([Problem(longest.source, longest.line,
                                 f"this gold reply is {n} tokens, and the task's eval.generation.max_new_tokens is "
                                 f"{budget}: replies this long would be cut at the budget; raise it to at least "
                                 f"{2 * n} (or unset it: sized from the gold replies)", "output")])


@functools.lru_cache(maxsize=4)
def _tokenizer(model: str):
    from delia.models import load_tokenizer

    return load_tokenizer(model)


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def train_budget(n_train: int, batch: int) -> float:
    """Epochs that give the downstream rows at least MIN_STEPS optimizer steps (at least 2 epochs, at most
    MAX_EPOCHS): a 40-row task at the old 2 epochs took 10 steps and learned the format, not the label."""
    per_epoch = math.ceil(n_train / batch)
    return float(min(MAX_EPOCHS, max(2, math.ceil(MIN_STEPS / per_epoch))))


def valid_phrasings_per_row(rows: int, phrasings: int) -> int:
    """Validation phrasings each validation row is asked under: about VALID_PROMPTS prompts in all, 1 to all."""
    return max(1, min(phrasings, round(VALID_PROMPTS / max(1, rows))))


def validation_dict(task: UserTask, info: dict[str, Any], data: Path, rows: int, phrasings: int) -> dict[str, Any]:
    """TrainConfig.validation: the validation rows, each under `valid_phrasings_per_row` of the validation
    phrasings (in turn, so every phrasing is used), scored as the test is."""
    k = valid_phrasings_per_row(rows, phrasings)
    custom = {"template": task.template, "instructions": "unseen:all" if k >= phrasings else f"unseen:{k}",
              "unseen_file": str(data / "instructions_valid.txt"), "special_tokens": [task.token],
              **({"token_description": task.format.strip()} if task.format else {}),
              **{k: v for k, v in info.items() if k != "task" and v is not None}}
    return {"eval": {"task": info["task"], "data": str(data / "valid.jsonl"), "custom": custom},
            **VALIDATION}


def eval_budget(task: UserTask) -> dict[str, Any]:
    """`generation.budget_floor` for the test evaluations, unless the task sets its own budget (then nothing, so
    the tasks that give one keep their step hashes)."""
    if (task.eval.get("generation") or {}).get("max_new_tokens"):
        return {}
    return {"generation": {"budget_floor": EVAL_BUDGET_FLOOR}}


def experiment_dict(task: UserTask, info: dict[str, Any], data: Path, n_train: int,
                    valid: tuple[int, int] = (0, 0)) -> dict[str, Any]:
    """The ExperimentConfig (as YAML data) that runs the task: one size (all training rows), one ratio.
    `valid`: (validation rows, validation phrasings)."""
    custom = {"template": task.template, "instructions": EVAL_INSTRUCTIONS + (EVAL_DESC if task.format else ""),
              "seen_file": str(data / "instructions_seen.txt"), "unseen_file": str(data / "instructions_unseen.txt"),
              "special_tokens": [task.token], **({"token_description": task.format.strip()} if task.format else {}),
              **{k: v for k, v in info.items() if k != "task" and v is not None}}
    train = merge(TRAIN, {"epochs": train_budget(n_train, TRAIN["batch_size"])})
    if task.holdout.validates:
        train["validation"] = validation_dict(task, info, data, *valid)
    exp = {"name": task.name, "out": task.out_dir, "model": task.model,
           **({"threads": task.threads} if task.threads else {}),
           "data": {"task": info["task"], "train": str(data / "train.jsonl"), "test": str(data / "test.jsonl"),
                    "valid": None},
           "grid": {"methods": task.method_list, "sizes": [n_train], "ratios": [task.ratio], "seeds": task.seeds},
           "build": {"template": task.template, "instructions": str(data / "instructions_seen.txt"),
                     "token": task.token},
           "sample": merge(SAMPLE, task.sample), "train": merge(train, task.train),
           "eval": merge({"custom": custom, "analysis": dict(EVAL_ANALYSIS), **eval_budget(task)}, task.eval),
           "sample_margin": 0.4,
           "drift": dict(DRIFT), "cost": dict(COST)}
    return merge(exp, task.experiment)


def _validate(exp: dict[str, Any]) -> None:
    """The generated config must load as an ExperimentConfig (checked before anything is written)."""
    from delia.config import from_dict
    from delia.experiments.config import ExperimentConfig

    try:
        from_dict(ExperimentConfig, exp)
    except (ConfigError, ValueError) as e:
        raise ConfigError(f"the generated experiment config is invalid: {e}") from None
