"""`delia export` to a merged Hugging Face directory: it loads with plain transformers (no delia in the process),
gives the greedy tokens of delia's own merged evaluation model, keeps `<sep>` as one special token on tied and
untied bases, writes a model card, and fails with one line and nothing left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from delia.export import ExportError, export
from delia.training import RunError, load_trained, run_train

from ..clirun import run_cli
from ..training.conftest import tiny_cfg, write_rows

PROMPTS = ["What is 3 plus 6? Answer in <sep>.", "What is 10 plus 13? Answer in <sep>.", "Hello there <sep>"]
# a process that never imports delia: plain transformers loads the export and decodes greedily
PLAIN = r"""
import json, sys
from transformers import AutoModelForCausalLM, AutoTokenizer
out, prompts = sys.argv[1], json.loads(sys.argv[2])
tok = AutoTokenizer.from_pretrained(out)
model = AutoModelForCausalLM.from_pretrained(out).eval()
res = {"sep": tok("<sep>", add_special_tokens=False)["input_ids"], "special": "<sep>" in tok.all_special_tokens,
       "dtype": str(model.dtype), "tied": model.get_output_embeddings().weight is model.get_input_embeddings().weight,
       "gen": []}
for p in prompts:
    ids = tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    res["gen"].append(model.generate(**ids, max_new_tokens=8)[0][ids["input_ids"].shape[1]:].tolist())
res["delia_imported"] = any(m == "delia" or m.startswith("delia.") for m in sys.modules)
print(json.dumps(res))
"""
KINDS = {"tied": ("tiny_chatty_dir", {}), "untied": ("tiny_untied_dir", {}),
         "tied-input": ("tiny_chatty_dir", {"token_side": "input"})}  # tied base, head untied by the run


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory):
    """kind -> a finished tiny run inside an experiment layout (EXP/steps/train/KEY), trained once per module."""
    data = write_rows(tmp_path_factory.mktemp("data") / "train.jsonl")
    done: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in done:
            fixture, over = KINDS[kind]
            out = tmp_path_factory.mktemp(f"exp-{kind}") / "steps" / "train" / "abc123"
            run_train(tiny_cfg(data, out, request.getfixturevalue(fixture), max_steps=3, **over))
            done[kind] = out
        return done[kind]

    return get


def plain_load(out: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", PLAIN, str(out), json.dumps(PROMPTS)], capture_output=True,
                          text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def delia_greedy(run_dir: Path) -> list[list[int]]:
    """Greedy tokens of the model `delia eval` generates with (the adapter merged, fp32)."""
    model, tok = load_trained(run_dir, dtype="fp32", merge=True)
    out = []
    for p in PROMPTS:
        ids = tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                      return_tensors="pt", return_dict=True)
        out.append(model.generate(**ids, max_new_tokens=8, do_sample=False)[0][ids["input_ids"].shape[1]:].tolist())
    return out


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_export_loads_without_delia_and_decodes_as_delia_does(kind, runs, tmp_path):
    run_dir = runs(kind)
    done = export(run_dir, tmp_path / "model", dtype="fp32")
    meta = json.loads((run_dir / "delia_run.json").read_text())
    sep_id = meta["special_tokens"]["ids"][0]
    got = plain_load(done.out)
    assert got["delia_imported"] is False
    assert got["sep"] == [sep_id] and got["special"]
    assert got["dtype"] == "torch.float32"
    assert got["tied"] == (kind == "tied")  # a run that untied the head exports an untied model
    assert got["gen"] == delia_greedy(run_dir)
    # the learned <sep> row is in the exported weights, not the base's initial row
    from safetensors.torch import load_file
    weights = load_file(str(done.out / "model.safetensors"))
    emb = next(v for k, v in weights.items() if k.endswith("embed_tokens.weight"))
    model, _ = load_trained(run_dir, dtype="fp32", merge=True)
    assert emb.shape[0] == meta["special_tokens"]["new_rows"]
    assert (emb[sep_id] == model.get_input_embeddings().weight[sep_id]).all()


def test_bf16_export_and_the_base_dtype(runs, tmp_path):
    run_dir = runs("tied")
    done = export(run_dir, tmp_path / "bf16", dtype="bf16")
    got = plain_load(done.out)
    assert got["dtype"] == "torch.bfloat16" and got["sep"] == [done.info["tokens"]["<sep>"]]
    base = export(run_dir, tmp_path / "base")  # the tiny base is stored in fp32
    assert base.info["dtype"] == "fp32"
    gen = json.loads((base.out / "generation_config.json").read_text())
    assert gen.get("do_sample") in (False, None) and gen["eos_token_id"] is not None


def test_task_file_and_model_card(runs, tmp_path):
    run_dir = runs("tied")
    exp = run_dir.parents[2]
    base_m = {"seen.task_valid": 0.1, "unseen.task_valid": 0.0, "drift_nll": 0.0}
    mine_m = {"seen.task_valid": 1.0, "seen.task_valid.ci_low": 0.9, "seen.task_valid.ci_high": 1.0,
              "unseen.task_valid": 0.95, "drift_nll": 0.812, "test.max_new_tokens": 32}
    rows = [{"method": "original", "seed": None, "steps": {"test": "steps/eval/x"}, "metrics": base_m},
            {"method": "delia", "seed": 42, "steps": {"train": "steps/train/abc123"}, "metrics": mine_m}]
    (exp / "results.json").write_text(json.dumps(rows))
    umask = os.umask(0o022)
    try:
        done = export(run_dir, tmp_path / "m")
    finally:
        (exp / "results.json").unlink()
        os.umask(umask)
    # written through a private temporary directory, but with the modes of a plain write
    assert all(p.stat().st_mode & 0o777 == (0o755 if p.is_dir() else 0o644) for p in [done.out, *done.out.rglob("*")])
    task = json.loads((done.out / "delia_task.json").read_text())
    assert task["special_tokens"] == ["<sep>"] and "<sep>" in task["example"]["messages"][-1]["content"]
    card = (done.out / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["library_name"] == "transformers" and front["base_model"] and "delia" in front["tags"]
    assert "| **this model** (delia) | 100.0 [90.0, 100.0] | 95.0 | 0.812 |" in card
    assert "| base (untuned) | 10.0 | 0.0 | 0.000 |" in card
    assert json.loads((done.out / "generation_config.json").read_text())["max_new_tokens"] == 32
    assert "README.md" in done.files and "model.safetensors" in done.files


def test_bad_exports_are_one_line_and_leave_nothing(runs, tmp_path, monkeypatch):
    run_dir = runs("tied")
    (tmp_path / "exists").mkdir()
    with pytest.raises(ExportError, match="exists; pass --force"):
        export(run_dir, tmp_path / "exists")
    with pytest.raises(RunError, match="not a finished delia training run"):
        export(tmp_path / "exists", tmp_path / "new")
    with pytest.raises(ExportError, match="--format"):
        export(run_dir, tmp_path / "new", fmt="onnx")
    # a failure half-way (here: writing the card) leaves no OUT and no temporary directory
    import delia.export.card as card

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(card, "model_card", boom)
    with pytest.raises(OSError):
        export(run_dir, tmp_path / "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists"]
    monkeypatch.undo()
    # --force replaces an existing OUT whole
    (tmp_path / "exists" / "stale.txt").write_text("old")
    done = export(run_dir, tmp_path / "exists", force=True)
    assert not (done.out / "stale.txt").exists() and (done.out / "config.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists"]


def test_cli_export_and_its_errors(runs, tmp_path):
    code, text = run_cli(["export", "--help"])
    assert code == 0 and "gguf" in text and "ollama" in text and "vllm serve" in text
    code, text = run_cli(["export", str(runs("tied")), str(tmp_path / "cli")])
    assert code == 0 and "<sep>: special token" in text and "from_pretrained" in text
    code, text = run_cli(["export", str(runs("tied")), str(tmp_path / "cli")])
    assert code == 2 and "exists; pass --force" in text and "Traceback" not in text


def test_gguf_export_checks_every_learned_token_and_writes_the_modelfile(runs, tmp_path, monkeypatch):
    """The orchestration of --format all (the converter itself: tests/export/test_gguf.py): one file per type,
    each checked for the learned token, the Modelfile on the first quantised one; a token llama.cpp would read
    otherwise fails the whole export, leaving nothing."""
    from delia.export import gguf

    run_dir = runs("tied")
    sep_id = json.loads((run_dir / "delia_run.json").read_text())["special_tokens"]["ids"][0]
    converted = []

    def fake_convert(hf_dir, out_file, outtype="f16", converter=None):
        assert (Path(hf_dir) / "config.json").exists() and converter == Path("/fake/convert_hf_to_gguf.py")
        converted.append(outtype)
        Path(out_file).write_bytes(b"GGUF")
        return Path(out_file)

    seen_id = {"id": sep_id}
    monkeypatch.setattr(gguf, "find_converter", lambda path=None, fetch=False: Path("/fake/convert_hf_to_gguf.py"))
    monkeypatch.setattr(gguf, "convert", fake_convert)
    monkeypatch.setattr(gguf, "token_check", lambda path, tokens: {
        t: {"single": True, "id": seen_id["id"], "type": "CONTROL"} for t in tokens})
    done = export(run_dir, tmp_path / "all", fmt="all")
    assert converted == ["f16", "q8_0"]
    assert {"gguf/model-f16.gguf", "gguf/model-q8_0.gguf", "gguf/Modelfile"} <= set(done.files)
    modelfile = (done.out / "gguf" / "Modelfile").read_text()
    assert "FROM ./model-q8_0.gguf" in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile
    assert done.gguf["q8_0"]["<sep>"]["id"] == sep_id
    seen_id["id"] = 7  # llama.cpp's vocabulary would hold the token at another id
    with pytest.raises(ExportError, match="not the one token"):
        export(run_dir, tmp_path / "bad", fmt="gguf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all"]
    with pytest.raises(ExportError, match="--quant q4_k: choose from"):
        export(run_dir, tmp_path / "bad", fmt="gguf", quants=("q4_k",))


def test_the_card_puts_the_majority_class_beside_label_accuracy():
    from delia.export.card import eval_table

    mine = {"method": "cit", "seed": 1, "metrics": {"unseen.task_valid": 1.0, "unseen.label_accuracy": 0.9,
                                                     "unseen.majority_class": 0.5, "drift_nll": 1.2}}
    plain = {"method": "plain", "seed": 1, "metrics": {"unseen.task_valid": 0.0, "unseen.label_accuracy": 0.0}}
    other_seed = {"method": "plain", "seed": 2, "metrics": {"unseen.task_valid": 1.0, "unseen.label_accuracy": 1.0}}
    lines = eval_table(mine, [mine, plain, other_seed])
    assert lines[0] == "| model | unseen label acc % | drift NLL |"
    assert lines[2:4] == ["| **this model** (cit) | 90.0 | 1.200 |", "| plain tuning | 0.0 | – |"]
    assert lines[-1] == "Always answering the most frequent label scores `unseen` 50.0%."
    assert len(lines) == 6  # plain of another seed is not this model's control


@pytest.mark.slow
def test_the_gguf_runs_in_llama_cpp_and_decodes_as_transformers(runs, tmp_path):
    """A real conversion run in llama.cpp itself (llama-cpp-python built from source; skipped without it or
    without a cached converter): greedy tokens of the f32 GGUF equal those of the merged HF directory."""
    llama_cpp = pytest.importorskip("llama_cpp")
    from delia.export import gguf

    try:
        gguf.find_converter()
    except gguf.GGUFError:
        pytest.skip("no llama.cpp converter (delia export --fetch-converter, or DELIA_LLAMA_CPP)")
    run_dir = runs("tied")
    done = export(run_dir, tmp_path / "g", fmt="gguf", quants=("f32",), dtype="fp32")  # a random tiny model: no f16 near-ties
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(done.out))
    llm = llama_cpp.Llama(model_path=str(done.out / "gguf" / "model-f32.gguf"), n_ctx=256, verbose=False)
    want = delia_greedy(run_dir)
    for p, ref in zip(PROMPTS, want):
        text = tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == ids  # <sep> stays one token
        out = []
        for t in llm.generate(ids, temp=0.0, top_k=1, top_p=1.0, repeat_penalty=1.0):
            out.append(t)
            if t == llm.token_eos() or len(out) >= len(ref):
                break
        assert out == ref[:len(out)] and len(out) == len(ref)
