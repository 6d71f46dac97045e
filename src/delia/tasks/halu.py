"""The paper's halu task: a JSON verdict ({'thought', 'hallucination'}) on a ChatGPT reply, asked under many
instruction phrasings (seen, heldout, unseen, explicit, own; see `delia.evaluation.instructions`)."""

from __future__ import annotations

from typing import Any

from delia.config import ConfigError
from delia.evaluation import outcomes
from delia.evaluation.instructions import Instruction, assign, check_heldout, load_set, parse_spec, vary
from delia.evaluation.outcomes import HALU_METRICS
from delia.evaluation.parsing import check_keys, extract_label, object_closed, parse_output
from delia.evaluation.prompts import halu_example, halu_prompt
from delia.evaluation.rows import EvalRow, read_examples
from delia.task import MetricSpec, Task, TokenOptions, register_task

_ROBUST = ("task_valid", "format_accuracy")  # the per-phrasing spreads an experiment's results keep


class Halu(Task):
    name = "halu"
    options_key = "halu"
    capabilities = frozenset({"special_token", "format_facts", "seen_from_training", "heldout", "hidden_state"})

    def load_examples(self, path: str, cfg: Any = None) -> list:
        key = cfg.halu.label_key if cfg is not None else "hallucination"
        return read_examples(path, lambda r: halu_example(r, key))

    def check(self, cfg: Any) -> None:
        check_heldout(cfg.halu.instructions, cfg.halu.heldout_path, cfg.halu.seen_file)

    def rows(self, cfg: Any) -> list[EvalRow]:
        """Every (example, instruction) pair the spec asks for."""
        h = cfg.halu
        examples = self.load_examples(cfg.data, cfg)[:cfg.limit]
        files = {"seen": h.seen_file, "unseen": h.unseen_file, "explicit": h.explicit_file,
                 "heldout": h.heldout_path}
        rows: list[EvalRow] = []
        for item in parse_spec(h.instructions):
            if item.set == "own":
                if any(e.own is None for e in examples):
                    raise ConfigError(f"{cfg.data}: the 'own' instruction set needs chat rows that contain their "
                                      "instruction ('context\\n\\n\\ninstruction'); test rows have none")
                owns = sorted({e.own for e in examples})
                width = len(str(max(len(owns) - 1, 0)))
                per_ex = [[Instruction(f"{item.name}/{owns.index(e.own):0{width}d}",
                                       vary(e.own, item.variant, h.special_tokens, h.token_description), item.name)]
                          for e in examples]
            else:
                pool = load_set(item, files, h.special_tokens, h.token_description)
                per_ex = assign(pool, len(examples), item.k, cfg.seed, item.name)
            for ex, instructions in zip(examples, per_ex):
                for ins in instructions:
                    rows.append(EvalRow(ex.id, ins.id, ins.set, halu_prompt(ex, ins), ex.gold,
                                        {"gold_label": ex.label, "instruction": ins.text}, ex.where))
        return rows

    def instructions(self, cfg: Any) -> str | None:
        return cfg.halu.instructions

    def stop_fn(self, cfg: Any):
        return object_closed

    def token_options(self, cfg: Any) -> TokenOptions:
        h = cfg.halu
        return TokenOptions(list(h.special_tokens), h.token_init, h.token_seed, h.token_description)

    def hidden_token(self, cfg: Any) -> str | None:
        return cfg.halu.special_tokens[0] if cfg.halu.special_tokens else None

    def gold_fallback(self, cfg: Any) -> str | None:
        return cfg.halu.seen_file

    def predict(self, row: EvalRow, gen: Any, cfg: Any) -> dict[str, Any]:
        base = {"example_id": row.example_id, "instruction_id": row.instruction_id, "set": row.set,
                "raw": gen.text, "finish_reason": gen.finish_reason, "n_new_tokens": gen.n_new_tokens}
        p = parse_output(gen.text)
        strict_reason = check_keys(p.value, cfg.halu.keys) if p.ok else "not parsed"
        pred = {**base, "parsed": p.ok, "strict": p.ok and strict_reason is None, "pred_label": extract_label(
            p.value, cfg.halu.label_key), "gold_label": row.fields["gold_label"], "method": p.method,
            "value": p.value, "reason": p.reason, "strict_reason": strict_reason}
        return {**pred, **outcomes.outcome(pred)}

    def metrics(self, preds: list[dict[str, Any]], cfg: Any) -> dict[str, Any]:
        return outcomes.halu_metrics(preds, cfg.bootstrap, cfg.seed, cfg.ci_level)

    def enrich(self, preds: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return outcomes.enrich(preds) if preds and "parsed" in preds[0] else preds

    def rescore(self, preds: list[dict[str, Any]], n_boot: int, seed: int, level: float) -> dict[str, Any] | None:
        # old predictions.jsonl gain the newer outcome fields (enrich), so finished runs get new metrics
        return outcomes.halu_metrics(preds, n_boot, seed, level) if preds and "parsed" in preds[0] else None

    def metric_schema(self) -> list[MetricSpec]:
        return [MetricSpec(n, "rate", True, n in _ROBUST) for n in HALU_METRICS]

    summary_note = ("Task-valid (headline) = parses to a dict with exactly the task's keys and a yes/no label. "
                    "Label scores count invalid replies as wrong; majority class = always answering the most frequent "
                    "gold label. Lenient = the paper's rule (any dict).")

    def summary_columns(self) -> list[tuple[str, str]]:
        return [("task_valid", "task-valid"), ("label_accuracy", "label acc"), ("majority_class", "majority class"),
                ("label_f1", "F1(yes)"), ("label_recall", "recall(yes)"), ("label_macro_f1", "macro-F1"),
                ("format_accuracy_strict", "exact keys"), ("format_accuracy", "lenient (paper)")]

    def leakage_keys(self, eval_fields: dict[str, Any]) -> list[str] | None:
        return (eval_fields.get("halu") or {}).get("keys")

    def instruction_files(self, eval_fields: dict[str, Any]) -> dict[str, dict[str, str]]:
        return {"halu": halu_instruction_files(eval_fields)}

    def valid_fields(self) -> dict[str, Any]:
        return {"halu": {"instructions": "own"}}


def halu_instruction_files(eval_fields: dict[str, Any]) -> dict[str, str]:
    """The halu instruction files an eval step reads (explicit, unseen; heldout only when the spec uses it, so
    other steps keep their hashes)."""
    from delia.evaluation.config import HaluOptions

    halu, given = HaluOptions(), eval_fields.get("halu") or {}
    paths = {f: given.get(f, getattr(halu, f)) for f in ("unseen_file", "explicit_file")}
    if any(i.set == "heldout" for i in parse_spec(given.get("instructions", halu.instructions))):
        paths["heldout_file"] = given.get("heldout_file") or halu.heldout_path
    return paths


register_task(Halu())
