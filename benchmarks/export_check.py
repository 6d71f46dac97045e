"""Does the exported model answer as delia measured it? Export a run of an experiment, load the merged directory
with plain transformers, decode every test prompt of that run's evaluation greedily, and compare token for token
with the replies delia's own evaluation of the adapter generated (its predictions.jsonl).

    python benchmarks/export_check.py EXP --method delia [--seed 42] [--out /tmp/export_check] [--gguf f16,q8_0]

Prints the export time, the share of test prompts whose tokens agree over delia's reply (delia stops a reply at
the end of its answer: the comparison covers the tokens delia generated), the label accuracy recomputed from the
transformers replies beside delia's, and the first disagreements. The dtype is the one delia evaluated in
(fp32 on a CPU without native bf16). With --gguf (needs llama-cpp-python, built from its source distribution:
`pip install --no-deps llama-cpp-python==0.3.36 diskcache`), the export also writes GGUF files and each is run
in llama.cpp on the same prompts (the prompt token ids of the HF tokenizer, so only the model differs; the share
of prompts llama.cpp's own tokenizer reads identically is printed too), greedily, against delia's replies.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import yaml


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("exp", type=Path)
    ap.add_argument("--method", default="delia")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--out", type=Path, default=Path("/tmp/export_check"))
    ap.add_argument("--limit", type=int, default=None, help="first N prompts only")
    ap.add_argument("--gguf", default="", help="GGUF types to run in llama.cpp as well, e.g. f16,q8_0")
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from delia.config import from_dict
    from delia.evaluation.config import EvalConfig
    from delia.export import export
    from delia.task import get_task

    rows = json.loads((args.exp / "results.json").read_text())
    run = next(r for r in rows if r["method"] == args.method and (args.seed is None or r.get("seed") == args.seed))
    train, test = args.exp / run["steps"]["train"], args.exp / run["steps"]["test"]
    t0 = time.perf_counter()
    quants = tuple(q for q in args.gguf.split(",") if q)
    done = export(train, args.out, force=True, dtype="fp32", fmt="gguf" if quants else "hf",
                  quants=quants or ("f16",))
    print(f"export ({args.method}, seed {run.get('seed')}): {time.perf_counter() - t0:.1f} s -> {done.out}")

    cfg = from_dict(EvalConfig, yaml.safe_load((test / "config.yaml").read_text()))
    prompts = {(r.example_id, r.instruction_id): r for r in get_task(cfg.task).rows(cfg)}
    preds = [json.loads(x) for x in (test / "predictions.jsonl").read_text().splitlines() if x.strip()]
    preds = preds[: args.limit] if args.limit else preds
    tok = AutoTokenizer.from_pretrained(str(done.out))
    model = AutoModelForCausalLM.from_pretrained(str(done.out)).eval()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    agree, label_hf, label_delia, diffs = 0, 0, 0, []
    t0 = time.perf_counter()
    for p in preds:
        row = prompts[(p["example_id"], p["instruction_id"])]
        ids = tok.apply_chat_template(row.prompt, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=max(1, p["n_new_tokens"]), do_sample=False)
        new = out[0][ids["input_ids"].shape[1]:]
        text = tok.decode(new, skip_special_tokens=True)
        same = text.strip() == p["raw"].strip()
        agree += same
        if not same and len(diffs) < 5:
            diffs.append((p["example_id"], p["instruction_id"], p["raw"][:80], text[:80]))
        gold = p.get("gold_label")
        if gold is not None:
            label_delia += p.get("label") == gold
            # the same reply scores as delia scored it; another one is read leniently (its JSON's only value)
            label_hf += (p.get("label") == gold) if same else _label(text, gold)
    secs = time.perf_counter() - t0
    n = len(preds)
    print(f"{n} test prompts of {test.name} in {secs:.0f} s: transformers' greedy tokens agree with delia's "
          f"evaluation on {agree}/{n} ({100 * agree / n:.1f}%)")
    if any(p.get("gold_label") is not None for p in preds):
        print(f"label accuracy: delia's evaluation {100 * label_delia / n:.1f}%, the exported model "
              f"{100 * label_hf / n:.1f}%")
    for d in diffs:
        print("  differs:", d)
    for q in quants:
        llama_check(done.out / "gguf" / f"model-{q}.gguf", tok, prompts, preds, q)
    return 0 if agree == n else 1


def llama_check(path: Path, tok, prompts, preds, q: str) -> None:
    """Greedy replies of llama.cpp on the GGUF `path` to every test prompt, against delia's."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=1024, n_threads=2, verbose=False, logits_all=False)
    agree = same_tok = label = n_gold = 0
    t0 = time.perf_counter()
    for p in preds:
        row = prompts[(p["example_id"], p["instruction_id"])]
        text_prompt = tok.apply_chat_template(row.prompt, add_generation_prompt=True, tokenize=False)
        ids = tok(text_prompt, add_special_tokens=False)["input_ids"]
        same_tok += llm.tokenize(text_prompt.encode(), add_bos=False, special=True) == ids
        llm.reset()
        out = []
        for t in llm.generate(ids, temp=0.0, top_k=1, top_p=1.0, repeat_penalty=1.0, reset=True):
            if llm.token_eos() == t or t == tok.eos_token_id:
                break
            out.append(t)
            if len(out) >= max(1, p["n_new_tokens"]):
                break
        text = tok.decode(out, skip_special_tokens=True)
        same = text.strip() == p["raw"].strip()
        agree += same
        if p.get("gold_label") is not None:
            n_gold += 1
            label += (p.get("label") == p["gold_label"]) if same else _label(text, p["gold_label"])
    n = len(preds)
    print(f"llama.cpp {q} ({path.stat().st_size / 2**20:.0f} MiB): greedy replies agree with delia's on {agree}/{n} "
          f"({100 * agree / n:.1f}%); llama.cpp tokenizes {same_tok}/{n} prompts as the HF tokenizer does"
          + (f"; label accuracy {100 * label / n_gold:.1f}%" if n_gold else "")
          + f" ({time.perf_counter() - t0:.0f} s)")


def _label(text: str, gold: str) -> bool:
    """The exported reply's label matches `gold` (its JSON's only value, read leniently)."""
    try:
        value = json.loads(text[text.index("{"): text.rindex("}") + 1])
    except ValueError:
        return False
    return isinstance(value, dict) and len(value) == 1 and str(next(iter(value.values()))).lower() == gold


if __name__ == "__main__":
    sys.exit(main())
