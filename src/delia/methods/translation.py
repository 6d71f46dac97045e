"""Translation rows (`src`/`ref`) as chat rows in the halu layout, so the builder can diversify their
instruction and mix in diverse data (the paper's translation experiments, Table 3)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from delia.registry import registry

TRANSFORMS = registry("transform")  # run by the experiments' `transform` step

INSTRUCTION = "Translate the text above into {tgt_lang}."


@TRANSFORMS.register("translation_chat", help="src/ref rows -> chat rows '\\n{src}\\n\\n\\n{instruction}' -> ref")
def translation_chat(inputs: dict[str, Path], out: Path, instruction: str = INSTRUCTION) -> dict[str, Any]:
    """Write out/data.jsonl: one chat row per translation row, the instruction after the source text.

    Args:
        inputs: {"data": a subset step directory holding data.jsonl of translation rows}.
        instruction: the instruction, with {tgt_lang} / {src_lang} filled with language names.
    """
    from delia.data import read_records
    from delia.evaluation.prompts import LANGS, translation_example

    rows = []
    for rec in read_records(inputs["data"] / "data.jsonl"):
        ex = translation_example(rec)
        text = instruction.format(tgt_lang=LANGS.get(ex.tgt_lang, ex.tgt_lang),
                                  src_lang=LANGS.get(ex.src_lang, ex.src_lang))
        rows.append({"id": ex.id, "messages": [{"role": "user", "content": f"\n{ex.src}\n\n\n{text}"},
                                               {"role": "assistant", "content": ex.ref}]})
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "data.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return {"rows": len(rows)}
