"""The report's first screen: which tuned model to use, chosen by validation only, its test scores on unseen
phrasings beside the base and plain tuning, its drift from the base, where it is on disk and how to load it.

The choice never looks at the test: the tuned method with the best mean validation score (the task's own metric
on validation rows and phrasings, `train.validation`) wins; ties go to the smaller drift from the base, then to
the simpler method (the report's order: cit, then DELIA and the others). `plain` is validated on other prompts
(the format written out) and is chosen only when no other method validated. Within it, the seed whose run validated best (ties: the first seed).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from delia.experiments.compare import Group, interval, md_table
from delia.experiments.drift_tables import drift_interval
from delia.experiments.results import Results
from delia.experiments.tables import majority, pct

HEADLINE_SETS = ("unseen", "unseen-desc", "seen")
DESC = "unseen-desc"


def _valid(run: dict[str, Any]) -> float:
    v = (run.get("metrics") or {}).get("train.valid_score")
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else math.nan


def _mean(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def choose(res: Results, gs: list[Group]) -> tuple[Group, dict[str, Any]] | None:
    """(group, run) of the model to use, by validation only; None when no tuned run validated."""
    scored = [(g, _mean([_valid(r) for r in g.runs])) for g in gs if g.trained and not g.twin_of]
    scored = [(g, v) for g, v in scored if not math.isnan(v)]
    # `plain` validates on the phrasings with the format written out (it never learns the token): its score is
    # not comparable with the others', so it is chosen only when nothing else validated
    scored = [(g, v) for g, v in scored if g.method != "plain"] or scored
    if not scored:
        return None
    order = {id(g): i for i, g in enumerate(gs)}
    drift = {id(g): drift_interval(res, g, "nll").mean for g, _ in scored}
    best = max(scored, key=lambda gv: (round(gv[1], 9), -_nan_big(drift[id(gv[0])]), -order[id(gv[0])]))[0]
    run = max(enumerate(best.runs), key=lambda ir: (_nan_small(_valid(ir[1])), -ir[0]))[1]
    return best, run


def _nan_big(x: float) -> float:
    return math.inf if math.isnan(x) else x


def _nan_small(x: float) -> float:
    return -math.inf if math.isnan(x) else x


def _cell(res: Results, g: Group, s: str, metric: str) -> str:
    iv = interval(res, g.runs, s, metric)
    return "–" if math.isnan(iv.mean) else f"{pct(iv.mean)} [{pct(iv.low)}, {pct(iv.high)}]"


def answer_first(res: Results, gs: list[Group], sets: list[str]) -> list[str]:
    """Markdown lines (at most ~25): the recommendation, a small table, where the model is, how to load it."""
    picked = choose(res, gs)
    if picked is None:
        return []
    best, run = picked
    s = next((x for x in HEADLINE_SETS if x in sets), sets[-1] if sets else None)
    if s is None:
        return []
    labelled = res.labelled([r for g in gs for r in g.runs], s)
    desc = s != DESC and DESC in sets  # the format written out: plain tuning's fair test
    shown = [g for g in gs if not g.twin_of and (g.method in ("original", "plain") or g.trained)]
    seed = run.get("seed")
    kept = (run.get("metrics") or {}).get("train.best_step")
    where = run["steps"].get("train", "–")
    rows = []
    for g in shown:
        drift = drift_interval(res, g, "nll")
        name = f"{g.label} †" if g.method == "plain" and g.trained else g.label
        rows.append([f"**{name}**" if g is best else name,
                     pct(_mean([_valid(r) for r in g.runs])) if g.trained else "–",
                     _cell(res, g, s, "task_valid"),
                     *([_cell(res, g, s, "label_accuracy")] if labelled else []),
                     *([_cell(res, g, DESC, "label_accuracy" if labelled else "task_valid")] if desc else []),
                     "–" if math.isnan(drift.mean) else f"{drift.mean:.3f}"])
    maj = majority(res, [r for g in gs for r in g.runs], s) if labelled else math.nan
    metric = (run.get("metrics") or {}).get("train.valid_metric", "score")
    plain_note = (["Prompt it with the format written out (plain tuning never learned the token)."]
                  if best.method == "plain" else [])
    return (["## Answer: which model to use", "",
             f"**Use `{best.label}`, seed {seed}** (kept at step {kept}, chosen by validation {metric}, never by "
             f"the test). Test scores on phrasings never trained on (`{s}`"
             f"{f'; `{DESC}`: the format written out instead of the token' if desc else ''}), %, with 95% intervals "
             f"over examples and seeds; drift = NLL of the base's own answers to held-out general queries:", ""] +
            md_table(["model", "validation %", f"{s} task-valid", *([f"{s} label acc"] if labelled else []),
                      *([f"{DESC} {'label acc' if labelled else 'task-valid'}"] if desc else []),
                      "drift NLL (lower = closer to base)"], rows) +
            ([""] + ([f"Always answering the majority label scores {pct(maj)}%."] if labelled else []) +
             plain_note +
             (["† validated on the validation phrasings with the format written out (it never learns the token)."]
              if any(g.method == "plain" and g.trained for g in shown) else []) +
             [f"The model (LoRA adapter + the learned token rows): `{res.root / where}`",
              f"Load it: `python -c \"from delia.training import load_trained; "
              f"model, tok = load_trained('{res.root / where}')\"`",
              f"Export it (a merged model for transformers and vLLM; `--format all` adds GGUF for llama.cpp and an "
              f"Ollama Modelfile): `{export_command(res.root / where, best)}`",
              ""]))


def export_command(run_dir: Path, g: Group) -> str:
    """The `delia export` command for the recommended run (into EXP/export/METHOD)."""
    return f"delia export {run_dir} {run_dir.parents[2] / 'export' / g.method}"


def recommendation(root: Path) -> list[str]:
    """The report's answer section for an experiment directory (printed at the end of `delia run`)."""
    from delia.experiments.compare import groups

    res = Results(root)
    return answer_first(res, groups(res), res.sets())
