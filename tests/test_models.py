from __future__ import annotations

import json

import pytest
import torch

from delia import models
from delia.testing import tiny_model

DESC = ("<sep> is a response format: reply with only a json object with two keys, 'thought' and "
        "'hallucination' ('yes' or 'no').")


def _snapshot(model):
    emb = model.get_input_embeddings().weight.detach().clone()
    out = model.get_output_embeddings().weight.detach().clone()
    return emb, out


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("init", ["random", "mean", "mean_vocab"])
def test_existing_rows_bit_identical(tied, init):
    model, tok = tiny_model(tied=tied)
    n_old = len(tok)
    emb0, out0 = _snapshot(model)
    info = models.add_special_tokens(model, tok, ["<sep>"], init=init, description=DESC)
    emb1, out1 = _snapshot(model)
    assert info.ids == [n_old] and len(tok) == n_old + 1
    assert emb1.shape[0] == n_old + 1
    assert torch.equal(emb1[:n_old], emb0)  # bit-identical, not just close
    assert torch.equal(out1[:n_old], out0)
    assert models.is_tied(model) == tied
    # the new token is one piece
    assert tok("a <sep> b", add_special_tokens=False)["input_ids"].count(info.ids[0]) == 1


def test_random_init_reproducible_per_seed_and_sigma():
    rows = []
    for seed in (1, 1, 2):
        model, tok = tiny_model(tied=True)
        info = models.add_special_tokens(model, tok, ["<sep>"], init="random", seed=seed)
        rows.append(model.get_input_embeddings().weight[info.ids[0]].detach().clone())
        assert info.sigma == model.config.initializer_range
    assert torch.equal(rows[0], rows[1])
    assert not torch.equal(rows[0], rows[2])
    model, tok = tiny_model(tied=True)
    info = models.add_special_tokens(model, tok, ["<sep>"], init="random", seed=3, sigma=1.0)
    assert info.sigma == 1.0
    assert 0.5 < model.get_input_embeddings().weight[info.ids[0]].std().item() < 1.5


def test_mean_init_equals_mean_of_description_tokens():
    model, tok = tiny_model(tied=True)
    emb0 = model.get_input_embeddings().weight.detach().clone()
    info = models.add_special_tokens(model, tok, ["<sep>"], init="mean", description=DESC)
    desc_ids = tok(DESC, add_special_tokens=False)["input_ids"]
    desc_ids = [i for i in desc_ids if i != info.ids[0]]  # the token's own (new) row is not averaged
    assert info.description_ids == desc_ids and len(desc_ids) > 10
    expected = emb0[desc_ids].mean(0)
    got = model.get_input_embeddings().weight[info.ids[0]]
    assert torch.allclose(got, expected, atol=1e-6)


def test_mean_vocab_init_and_untied_output_row():
    model, tok = tiny_model(tied=False)
    n_old = len(tok)
    emb0, out0 = _snapshot(model)
    info = models.add_special_tokens(model, tok, ["<sep>"], init="mean_vocab")
    emb1, out1 = _snapshot(model)
    assert torch.allclose(emb1[info.ids[0]], emb0[:n_old].mean(0), atol=1e-6)
    assert torch.allclose(out1[info.ids[0]], out0[:n_old].mean(0), atol=1e-6)


def test_tied_output_row_follows_input_row():
    model, tok = tiny_model(tied=True)
    info = models.add_special_tokens(model, tok, ["<sep>"], init="random", seed=5)
    tid = info.ids[0]
    with torch.no_grad():
        model.get_input_embeddings().weight[tid] += 1.0
    assert torch.equal(model.get_output_embeddings().weight[tid], model.get_input_embeddings().weight[tid])
    # and the logits really use it: the new token's logit is h . W[tid]
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
    h = out.hidden_states[-1][0, -1]
    assert torch.allclose(out.logits[0, -1, tid], h @ model.get_input_embeddings().weight[tid], atol=1e-4)


def test_no_shrink_when_vocab_is_padded():
    model, tok = tiny_model(tied=True, vocab_size=len(tiny_model()[1]) + 64)
    rows = model.get_input_embeddings().weight.shape[0]
    emb0 = model.get_input_embeddings().weight.detach().clone()
    info = models.add_special_tokens(model, tok, ["<sep>"], init="mean_vocab")
    assert info.old_rows == rows and info.new_rows == rows  # room already there: no resize, no shrink
    assert model.get_input_embeddings().weight.shape[0] == rows
    tid = info.ids[0]
    w = model.get_input_embeddings().weight
    assert torch.equal(w[:tid], emb0[:tid]) and torch.equal(w[tid + 1:], emb0[tid + 1:])


def test_pad_to_multiple_and_existing_token():
    model, tok = tiny_model(tied=True)
    info = models.add_special_tokens(model, tok, ["<sep>"], init="mean_vocab", pad_to_multiple_of=64)
    assert info.new_rows % 64 == 0 and info.new_rows >= len(tok)
    again = models.add_special_tokens(model, tok, ["<sep>"], init="random")
    assert again.ids == info.ids and again.new_rows == info.new_rows  # nothing re-added, nothing re-initialised


def test_bad_init_arguments():
    model, tok = tiny_model(tied=True)
    with pytest.raises(ValueError, match="needs a description"):
        models.add_special_tokens(model, tok, ["<sep>"], init="mean")
    with pytest.raises(ValueError, match="init must be"):
        models.add_special_tokens(model, tok, ["<sep>"], init="zeros")


def test_resolve_model_errors(tmp_path):
    with pytest.raises(models.ModelNotFoundError, match="GGUF file not found"):
        models.resolve_model(str(tmp_path / "x.gguf"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(models.ModelNotFoundError, match="no config.json"):
        models.resolve_model(str(tmp_path / "empty"))
    assert models.resolve_model("org/some-model").kind == "hub"
    src = models.resolve_model(models.DEFAULT_MODEL)
    assert src.kind == "gguf" and src.path.endswith(".gguf")


def test_local_dir_loads_and_identity_tracks_weights(tiny_dir, tmp_path):
    model = models.load_model(tiny_dir, dtype="fp32")
    assert model.dtype == torch.float32 and model.config.hidden_size == 64
    ident = models.model_identity(tiny_dir)
    assert ident == models.model_identity(tiny_dir)
    other = tmp_path / "other"
    model.model.layers[0].mlp.up_proj.weight.data += 1
    model.save_pretrained(other)
    assert models.model_identity(str(other)) != ident


def test_resolve_dtype(monkeypatch):
    assert models.resolve_dtype("bf16") == torch.bfloat16
    assert models.resolve_dtype("fp32") == torch.float32
    expect = torch.bfloat16 if models.cpu_supports_bf16() else torch.float32
    assert models.resolve_dtype("auto") == expect
    for native, want in ((True, torch.bfloat16), (False, torch.float32)):  # both kinds of CPU, on any CPU
        monkeypatch.setattr(models, "cpu_supports_bf16", lambda native=native: native)
        assert models.resolve_dtype("auto") == want
    with pytest.raises(ValueError):
        models.resolve_dtype("int8")


def test_native_bf16_override(monkeypatch):
    """DELIA_NATIVE_BF16 wins over the CPU detection both ways, and every 'auto' follows it."""
    from delia.errors import UserError
    from delia.training.train import resolve_bf16

    if torch.cuda.is_available():
        pytest.skip("auto follows the GPU here")
    monkeypatch.delenv(models.NATIVE_BF16_ENV, raising=False)
    detected = models.cpu_supports_bf16()
    for value, native in (("0", False), ("1", True), (" 0 ", False)):
        monkeypatch.setenv(models.NATIVE_BF16_ENV, value)
        assert models.cpu_supports_bf16() is native
        assert models.resolve_dtype("auto") == (torch.bfloat16 if native else torch.float32)
        assert resolve_bf16("auto") is native  # training precision auto
        assert models.resolve_dtype("fp32") == torch.float32 and models.resolve_dtype("bf16") == torch.bfloat16
    monkeypatch.setenv(models.NATIVE_BF16_ENV, "")  # empty = unset: detect
    assert models.cpu_supports_bf16() is detected
    for bad in ("yes", "true", "2", "fp32"):
        monkeypatch.setenv(models.NATIVE_BF16_ENV, bad)
        with pytest.raises(models.NativeBf16Error, match=f"DELIA_NATIVE_BF16={bad!r}: expected 0") as e:
            models.resolve_dtype("auto")
        assert isinstance(e.value, UserError) and isinstance(e.value, ValueError)  # the CLI prints it, no traceback


def test_auto_picks_bf16_only_where_the_cpu_has_it_and_it_measured_faster(monkeypatch, tmp_path):
    """The flag is necessary, not sufficient: a CPU with avx512_bf16 whose bf16 matmuls run slower than fp32 (a
    Xeon without AMX: 0.51x) gets fp32. The probe runs once per CPU model and torch version; its cached result
    decides for every later process."""
    monkeypatch.delenv(models.NATIVE_BF16_ENV, raising=False)
    monkeypatch.setenv("DELIA_CACHE", str(tmp_path))
    monkeypatch.setattr(models, "_SPEEDUP", {})
    calls = []

    def probe(speedup):
        def measure():
            calls.append(speedup)
            return {"speedup": speedup, "fp32_gflops": 100.0, "bf16_gflops": 100.0 * speedup, "threads": 1}
        return measure

    monkeypatch.setattr(models, "cpu_flags_bf16", lambda: False)
    monkeypatch.setattr(models, "measure_bf16_speedup", probe(2.0))
    assert models.cpu_supports_bf16() is False and calls == []  # no flag: no probe, fp32
    monkeypatch.setattr(models, "cpu_flags_bf16", lambda: True)
    monkeypatch.setattr(models, "measure_bf16_speedup", probe(0.51))
    assert models.cpu_supports_bf16() is False and models.resolve_dtype("auto") == torch.float32
    assert calls == [0.51]  # measured once, then remembered
    (cached,) = (tmp_path / "calibration").glob("bf16-*.json")
    assert json.loads(cached.read_text())["speedup"] == 0.51
    monkeypatch.setattr(models, "_SPEEDUP", {})  # a new process: the cached file decides, no new probe
    monkeypatch.setattr(models, "measure_bf16_speedup", probe(2.0))
    assert models.cpu_supports_bf16() is False and calls == [0.51]
    cached.unlink()  # another machine (an empty cache): bf16 twice as fast there, so bf16
    monkeypatch.setattr(models, "_SPEEDUP", {})
    assert models.cpu_supports_bf16() is True and models.resolve_dtype("auto") == torch.bfloat16
    assert calls == [0.51, 2.0]
    monkeypatch.setattr(models, "_SPEEDUP", {})
    monkeypatch.setattr(models, "measure_bf16_speedup", probe(1.1))
    cached = next((tmp_path / "calibration").glob("bf16-*.json"))
    cached.write_text("not json")  # a damaged cache entry is measured again, not an error
    assert models.cpu_supports_bf16() is False  # 1.1x is below BF16_MIN_SPEEDUP: not worth bf16's precision
    monkeypatch.setenv(models.NATIVE_BF16_ENV, "1")  # the override wins over the probe
    assert models.cpu_supports_bf16() is True


def test_the_bf16_probe_measures_real_matmuls():
    out = models.measure_bf16_speedup(rows=16, reps=2)
    assert out["speedup"] > 0 and out["fp32_gflops"] > 0 and out["bf16_gflops"] > 0 and out["threads"] >= 1


@pytest.mark.slow
def test_embedded_model_loads_from_package_and_answers(tmp_path, monkeypatch):
    monkeypatch.setenv("DELIA_CACHE", str(tmp_path))
    path = models.ensure_local(models.DEFAULT_MODEL)
    assert path.startswith(str(tmp_path)) and (tmp_path / "models").exists()
    model, tok = models.load(models.DEFAULT_MODEL, dtype="fp32")
    assert model.config.num_hidden_layers == 30 and models.is_tied(model)
    reply = models.chat(model, tok, [{"role": "user", "content": "What is the capital of France?"}], 20)
    assert "Paris" in reply
