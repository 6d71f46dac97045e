"""The paper's translation task: one prompt per src/ref pair, BLEU and chrF++ (BLEURT / COMET with a local
checkpoint), the reply cleaned of a preamble and, by default, cut to its first line."""

from __future__ import annotations

from typing import Any

from delia.evaluation import metrics as M
from delia.evaluation import outcomes
from delia.evaluation.prompts import clean_translation, translation_done, translation_example, translation_prompt
from delia.evaluation.rows import EvalRow, read_examples
from delia.task import MetricSpec, Task, register_task
from delia.tasks.halu import halu_instruction_files


class Translation(Task):
    name = "translation"
    options_key = "halu"  # `--instructions` has always set halu.instructions, which translation ignores
    capabilities = frozenset({"dictionary_hints"})
    train_transform = "translation_chat"  # src/ref rows -> chat rows the builder can diversify
    build_fields = {"token": ""}  # no special token in translation

    def load_examples(self, path: str, cfg: Any = None) -> list:
        return read_examples(path, translation_example)

    def rows(self, cfg: Any) -> list[EvalRow]:
        examples = self.load_examples(cfg.data, cfg)[:cfg.limit]
        return [EvalRow(ex.id, "template", f"{ex.src_lang}-{ex.tgt_lang}",
                        translation_prompt(ex, cfg.translation.template), ex.ref, {"src": ex.src, "ref": ex.ref},
                        ex.where) for ex in examples]

    def stop_fn(self, cfg: Any):
        return translation_done if cfg.translation.first_line else None

    def cache_ident(self, cfg: Any) -> Any:
        return cfg.translation.first_line

    def predict(self, row: EvalRow, gen: Any, cfg: Any) -> dict[str, Any]:
        hyp = clean_translation(gen.text, cfg.translation.first_line)
        return {"example_id": row.example_id, "instruction_id": row.instruction_id, "set": row.set,
                "raw": gen.text, "finish_reason": gen.finish_reason, "n_new_tokens": gen.n_new_tokens,
                "hyp": hyp, "ref": row.fields["ref"], "src": row.fields["src"],
                "budget_hit": gen.finish_reason == "length"}

    def metrics(self, preds: list[dict[str, Any]], cfg: Any) -> dict[str, Any]:
        """BLEU and chrF++ with CIs; BLEURT / COMET when a local checkpoint is configured."""
        from delia.evaluation import neural

        t = cfg.translation
        names = ["bleu", "chrf++"]
        if t.bleurt_checkpoint:
            for p, s in zip(preds, neural.bleurt_scores([p["hyp"] for p in preds], [p["ref"] for p in preds],
                                                        t.bleurt_checkpoint)):
                p["bleurt"] = s
            names.append("bleurt")
        if t.comet_checkpoint:
            for p, s in zip(preds, neural.comet_scores([p["src"] for p in preds], [p["hyp"] for p in preds],
                                                       [p["ref"] for p in preds], t.comet_checkpoint)):
                p["comet"] = s
            names.append("comet")
        out: dict[str, Any] = {"sets": {}}
        for s in dict.fromkeys(p["set"] for p in preds):
            rows = [p for p in preds if p["set"] == s]
            out["sets"][s] = {n: M.interval(n, rows, cfg.bootstrap, cfg.seed, cfg.ci_level) for n in names}
            out["sets"][s]["empty_outputs"] = sum(not p["hyp"] for p in rows)
            out["sets"][s]["finish_reasons"] = outcomes.counts(rows)["finish_reasons"]
            out["sets"][s]["budget_hits"] = outcomes.budget_hits(rows)
        return out

    def metric_schema(self) -> list[MetricSpec]:
        return [MetricSpec(n, "score") for n in ("bleu", "chrf++", "bleurt", "comet")]

    def summary_columns(self) -> list[tuple[str, str]]:
        return [("bleu", "BLEU"), ("chrf++", "chrF++"), ("bleurt", "BLEURT"), ("comet", "COMET")]

    def instruction_files(self, eval_fields: dict[str, Any]) -> dict[str, dict[str, str]]:
        # translation reads no instruction file, but its eval steps have always been fingerprinted with halu's
        # defaults: kept, so finished translation steps keep their keys
        return {"halu": halu_instruction_files(eval_fields)}

    def valid_fields(self) -> dict[str, Any]:
        return {"halu": {"instructions": "own"}}  # as before (ignored by translation; part of the step hash)


register_task(Translation())
