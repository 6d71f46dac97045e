"""Your own task with no code: `json` (an object with required keys and allowed values), `label` (one label of a
set) and `text` (free text against a reference), configured under `custom:` (EvalConfig.custom).

Examples are `{"input", "output"}` rows (optional "id"), chat rows or prompt/completion rows whose last user turn
is `custom.template` filled (its instruction is the row's `own` phrasing) and whose reply is the gold output.
Each example is asked under the phrasings of `custom.instructions` (seen / unseen files, or `own`). What the
configuration leaves unset (json keys and allowed values, the label key, the label set) is inferred from the
gold outputs and recorded in metrics.json["inferred"]. Scoring is in `delia.tasks.scoring`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from delia.config import ConfigError, to_dict
from delia.data import DataError, Problem
from delia.evaluation.instructions import Instruction, assign, parse_spec, vary
from delia.evaluation.parsing import object_closed
from delia.evaluation.rows import EvalRow
from delia.task import MetricSpec, Task, TokenOptions, register_task
from delia.tasks import scoring as S


@dataclass(frozen=True)
class CustomExample:
    """One example: the input (the template's {context}), the gold output, and its own phrasing (chat rows)."""

    id: str
    input: str
    output: str
    own: str | None = None
    where: str = ""


def options(cfg: Any):
    """`cfg.custom`, or the defaults when the config names a custom task without a `custom:` section."""
    from delia.evaluation.config import CustomTaskOptions

    return cfg.custom if cfg.custom is not None else CustomTaskOptions()


def _template(text: str):
    from delia.diversify.apply import Template

    return Template(text)


def read_examples(path: str, template: str) -> list[CustomExample]:
    """The examples of `path`; every row that cannot be used is reported as FILE:LINE: field: reason.

    Raises:
        DataError: the problems of all bad rows together.
    """
    from delia.data.formats import detect_format
    from delia.data.io import iter_json_rows, parse_row
    from delia.data.records import FieldError

    tpl, source = _template(template), str(path)
    out, problems, ids = [], [], {}
    for line, obj, err in iter_json_rows(path):
        if err:
            problems.append(Problem(source, line, err))
            continue
        try:
            ex = _example(obj, tpl, source, line, detect_format, parse_row)
        except FieldError as e:
            problems.append(Problem(source, line, e.reason, e.field))
            continue
        if ex.id in ids:
            problems.append(Problem(source, line, f"duplicate id {ex.id!r} (first on line {ids[ex.id]})", "id"))
            continue
        ids[ex.id] = line
        out.append(ex)
    if not out and not problems:
        problems.append(Problem(source, 1, "file holds no rows"))
    if problems:
        raise DataError(problems)
    return out


def _example(obj: Any, tpl, source: str, line: int, detect_format, parse_row) -> CustomExample:
    from pathlib import Path

    from delia.data.records import FieldError

    if not isinstance(obj, dict):
        raise FieldError(None, f"expected a JSON object, got {type(obj).__name__}")
    rid = obj.get("id")
    if rid is not None and not isinstance(rid, (str, int)):
        raise FieldError("id", "expected a string or integer")
    rid = str(rid) if rid is not None else f"{Path(source).stem}:{line}"
    where = f"{source}:{line}"
    if "input" in obj and "output" in obj and "instruction" not in obj:
        for k in ("input", "output"):
            if not isinstance(obj[k], str) or not obj[k].strip():
                raise FieldError(k, "expected a non-empty string")
        return CustomExample(rid, obj["input"], obj["output"], None, where)
    fmt = detect_format(obj)
    if fmt is None or fmt.name not in ("messages", "prompt_completion"):
        raise FieldError(None, f"expected {{\"input\", \"output\"}}, chat (messages) or prompt/completion rows, got "
                               f"keys {sorted(obj)}")
    rec = parse_row(obj, fmt, source, line)
    users = [m["content"] for m in rec.prompt_messages if m["role"] == "user"]
    parts = tpl.parse(users[-1]) if users else None
    if parts is None:
        raise FieldError(fmt.name if fmt.name == "messages" else "prompt",
                         f"the last user turn does not match custom.template {tpl.text!r}")
    if not (rec.response or "").strip():
        raise FieldError("completion" if fmt.name == "prompt_completion" else "messages",
                         "no assistant reply: the gold output is required")
    return CustomExample(rid, parts[0], rec.response, parts[1].strip(), where)


def _phrasings(item, o) -> list[Instruction]:
    from delia.data import read_lines

    path = o.seen_file if item.set == "seen" else o.unseen_file
    if not path:
        raise ConfigError(f"custom.{item.set}_file: the instruction set {item.name!r} needs a file with one "
                          "phrasing per line (or use custom.instructions=own with chat rows)")
    texts = read_lines(path)
    if item.variant and not any(t in x for x in texts for t in o.special_tokens):
        raise ConfigError(f"custom.instructions: {item.name!r}: no phrasing of {path} contains {o.special_tokens}")
    width = len(str(len(texts) - 1))
    return [Instruction(f"{item.name}/{i:0{width}d}", vary(t, item.variant, o.special_tokens,
                                                          o.token_description or ""), item.name)
            for i, t in enumerate(texts)]


class Custom(Task):
    """What the three generic tasks share: examples, rows, tokens, phrasing metrics; `kind` is the task."""

    options_key = "custom"

    def __init__(self, kind: str) -> None:
        self.name = kind
        self._schemas: dict[str, S.Schema] = {}

    def load_examples(self, path: str, cfg: Any = None) -> list[CustomExample]:
        return read_examples(path, options(cfg).template if cfg is not None else "{context}\n\n{instruction}")

    def check(self, cfg: Any) -> None:
        _template(options(cfg).template)  # ConfigError when malformed

    def schema(self, cfg: Any) -> S.Schema:
        """Keys / values / labels: configured or inferred from all gold outputs of `cfg.data` (cached)."""
        key = json.dumps([self.name, cfg.data, to_dict(options(cfg))], sort_keys=True, default=str)
        if key not in self._schemas:
            examples = self.load_examples(cfg.data, cfg)
            self._schemas[key] = S.infer(self.name, [(e.output, e.where) for e in examples], options(cfg))
        return self._schemas[key]

    def rows(self, cfg: Any) -> list[EvalRow]:
        o, tpl = options(cfg), _template(options(cfg).template)
        schema = self.schema(cfg)
        examples = self.load_examples(cfg.data, cfg)[:cfg.limit]
        rows: list[EvalRow] = []
        for item in parse_spec(o.instructions):
            if item.set == "own":
                missing = next((e for e in examples if e.own is None), None)
                if missing is not None:
                    raise ConfigError(f"{missing.where}: the 'own' instruction set needs chat or prompt/completion "
                                      "rows whose user turn holds a phrasing; {input, output} rows have none")
                owns = sorted({e.own for e in examples})
                width = len(str(max(len(owns) - 1, 0)))
                per_ex = [[Instruction(f"{item.name}/{owns.index(e.own):0{width}d}", vary(
                    e.own, item.variant, o.special_tokens, o.token_description or ""), item.name)]
                    for e in examples]
            else:
                per_ex = assign(_phrasings(item, o), len(examples), item.k, cfg.seed, item.name)
            for ex, instructions in zip(examples, per_ex):
                for ins in instructions:
                    prompt = [{"role": "user", "content": tpl.render(ex.input, ins.text)}]
                    rows.append(EvalRow(ex.id, ins.id, ins.set, prompt, ex.output,
                                        {"instruction": ins.text, **S.gold_fields(schema, ex.output)}, ex.where))
        return rows

    def instructions(self, cfg: Any) -> str | None:
        return options(cfg).instructions

    def stop_fn(self, cfg: Any):
        return object_closed if self.name == "json" else None  # label / text: the end of the turn

    def cache_ident(self, cfg: Any) -> Any:
        return self.name  # the stop rule differs between the generic tasks

    def token_options(self, cfg: Any) -> TokenOptions:
        o = options(cfg)
        return TokenOptions(list(o.special_tokens), o.token_init, o.token_seed, o.token_description)

    def predict(self, row: EvalRow, gen: Any, cfg: Any) -> dict[str, Any]:
        base = {"example_id": row.example_id, "instruction_id": row.instruction_id, "set": row.set,
                "raw": gen.text, "finish_reason": gen.finish_reason, "n_new_tokens": gen.n_new_tokens}
        return {**base, **S.score(self.schema(cfg), gen.text, gen.finish_reason == "length", row.gold,
                                  row.fields.get("gold_label"))}

    def metrics(self, preds: list[dict[str, Any]], cfg: Any) -> dict[str, Any]:
        return S.metrics(self.schema(cfg), preds, cfg.bootstrap, cfg.seed, cfg.ci_level)

    def metric_schema(self) -> list[MetricSpec]:
        return S.metric_schema(self.name)

    def leakage_keys(self, eval_fields: dict[str, Any]) -> list[str] | None:
        return list((eval_fields.get("custom") or {}).get("keys") or []) if self.name == "json" else []

    def instruction_files(self, eval_fields: dict[str, Any]) -> dict[str, dict[str, str]]:
        given = eval_fields.get("custom") or {}
        paths = {f: given[f] for f in ("seen_file", "unseen_file") if given.get(f)}
        return {"custom": paths} if paths else {}

    def valid_fields(self) -> dict[str, Any]:
        return {"custom": {"instructions": "own"}}


for _kind in ("json", "label", "text"):
    register_task(Custom(_kind))
