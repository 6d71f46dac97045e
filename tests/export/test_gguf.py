"""GGUF export: finding llama.cpp's converter (path, env, cache, explicit fetch), running it atomically, and the
check that a learned token is one token with its trained id. The fast tests use a fake converter, a synthetic
sdist and a GGUF written with the gguf package; the slow one converts a tiny model with the real converter."""

from __future__ import annotations

import io
import json
import sys
import tarfile
from pathlib import Path

import pytest

from delia.errors import UserError
from delia.export import gguf
from delia.export.gguf import CONVERTER_ENV, SCRIPT, GGUFError

# A stand-in for convert_hf_to_gguf.py: writes what it was called with to --outfile; FAIL in the model dir makes
# it write half a file and die as a Python traceback does.
FAKE = """
import json, os, sys
args = sys.argv[1:]
out = args[args.index("--outfile") + 1]
with open(out, "w") as f:
    f.write("partial")
    if os.path.exists(os.path.join(args[0], "FAIL")):
        print("INFO:hf-to-gguf:Loading model", file=sys.stderr)
        print("Traceback (most recent call last):", file=sys.stderr)
        print("NotImplementedError: BPE pre-tokenizer was not recognized", file=sys.stderr)
        sys.exit(1)
    f.seek(0)
    json.dump({"args": args, "pythonpath": os.environ.get("PYTHONPATH", "")}, f)
"""


@pytest.fixture
def no_converter(tmp_path, monkeypatch) -> Path:
    """An empty delia cache and no $DELIA_LLAMA_CPP: nothing to find."""
    monkeypatch.setenv("DELIA_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(CONVERTER_ENV, raising=False)
    return tmp_path / "cache"


@pytest.fixture
def fake_tree(tmp_path) -> Path:
    """A llama.cpp-like directory with the fake script and a gguf-py folder."""
    tree = tmp_path / "llama.cpp"
    (tree / "gguf-py" / "gguf").mkdir(parents=True)
    (tree / SCRIPT).write_text(FAKE)
    return tree


@pytest.fixture
def hf_dir(tmp_path) -> Path:
    d = tmp_path / "hf"
    d.mkdir()
    (d / "config.json").write_text("{}")
    return d


# ---------------------------------------------------------------- finding the converter


def test_nothing_found_says_how_to_get_it(no_converter):
    with pytest.raises(GGUFError) as e:
        gguf.find_converter()
    msg = str(e.value)
    assert "\n" not in msg and "--fetch-converter" in msg and CONVERTER_ENV in msg
    assert f"llama-cpp-python=={gguf.LLAMA_CPP_PYTHON}" in msg and str(no_converter / "llama.cpp") in msg
    assert isinstance(e.value, UserError) and not no_converter.exists()  # nothing downloaded or created


def test_path_then_env_then_cache(no_converter, fake_tree, tmp_path, monkeypatch):
    script = fake_tree / SCRIPT
    assert gguf.find_converter(fake_tree) == script.resolve()
    assert gguf.find_converter(str(script)) == script.resolve()
    monkeypatch.setenv(CONVERTER_ENV, str(fake_tree))
    assert gguf.find_converter() == script.resolve()
    other = tmp_path / "other"
    (other / "gguf-py").mkdir(parents=True)
    (other / SCRIPT).write_text(FAKE)
    assert gguf.find_converter(other) == (other / SCRIPT).resolve()  # the argument beats the env
    monkeypatch.delenv(CONVERTER_ENV)
    cached = gguf.converter_cache()
    cached.mkdir(parents=True)
    (cached / SCRIPT).write_text(FAKE)
    assert gguf.find_converter() == cached / SCRIPT


@pytest.mark.parametrize("where", ["arg", "env"])
def test_a_given_path_without_the_script_is_named(no_converter, tmp_path, monkeypatch, where):
    empty = tmp_path / "empty"
    empty.mkdir()
    if where == "env":
        monkeypatch.setenv(CONVERTER_ENV, str(empty))
    with pytest.raises(GGUFError, match=f"{CONVERTER_ENV}=" if where == "env" else "no convert_hf_to_gguf.py"):
        gguf.find_converter(empty if where == "arg" else None)


def _sdist(path: Path, with_script: bool = True) -> Path:
    """A tarball laid out like llama-cpp-python's sdist, with files the converter needs and files it does not."""
    root = f"llama_cpp_python-{gguf.LLAMA_CPP_PYTHON}"
    files = {f"{root}/vendor/llama.cpp/conversion/__init__.py": "",
             f"{root}/vendor/llama.cpp/gguf-py/gguf/__init__.py": "",
             f"{root}/vendor/llama.cpp/models/templates/x.jinja": "{{ x }}",
             f"{root}/vendor/llama.cpp/models/ggml-vocab-big.gguf": "not wanted",
             f"{root}/vendor/llama.cpp/src/llama.cpp": "not wanted",
             f"{root}/llama_cpp/__init__.py": "not wanted",
             f"{root}/vendor/llama.cpp/../../escape.py": "not wanted"}
    if with_script:
        files[f"{root}/vendor/llama.cpp/{SCRIPT}"] = FAKE
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_fetch_only_when_asked_keeps_only_the_converter(no_converter, monkeypatch):
    calls = []

    def fake_download(version: str, into: Path) -> Path:
        calls.append(version)
        return _sdist(into / f"llama_cpp_python-{version}.tar.gz")

    monkeypatch.setattr(gguf, "_pip_download", fake_download)
    with pytest.raises(GGUFError):
        gguf.find_converter()
    assert calls == []
    script = gguf.find_converter(fetch=True)
    cache = gguf.converter_cache()
    assert script == cache / SCRIPT and calls == [gguf.LLAMA_CPP_PYTHON]
    kept = sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file())
    assert kept == sorted([SCRIPT, "conversion/__init__.py", "delia_source.json", "gguf-py/gguf/__init__.py",
                           "models/templates/x.jinja"])
    assert json.loads((cache / "delia_source.json").read_text())["version"] == gguf.LLAMA_CPP_PYTHON
    assert [p.name for p in cache.parent.iterdir()] == [gguf.LLAMA_CPP_PYTHON]  # the download is gone
    assert gguf.find_converter(fetch=True) == script and len(calls) == 1  # cached: no second download


def test_a_sdist_without_the_converter_leaves_no_cache(no_converter, monkeypatch):
    monkeypatch.setattr(gguf, "_pip_download", lambda v, into: _sdist(into / "x.tar.gz", with_script=False))
    with pytest.raises(GGUFError, match="pin another llama-cpp-python"):
        gguf.find_converter(fetch=True)
    assert not gguf.converter_cache().exists()


def test_a_failed_download_shows_pips_words(no_converter, monkeypatch):
    class Done:
        returncode, stdout, stderr = 1, "", "ERROR: No matching distribution found for llama-cpp-python==0.3.36\n"

    monkeypatch.setattr(gguf.subprocess, "run", lambda *a, **k: Done())
    with pytest.raises(GGUFError, match="No matching distribution"):
        gguf.find_converter(fetch=True)
    assert not gguf.converter_cache().exists()


# ---------------------------------------------------------------- converting


def test_convert_runs_the_script_and_renames_into_place(fake_tree, hf_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(gguf, "missing_requirements", lambda: [])
    out = tmp_path / "gguf" / "model-q8_0.gguf"
    assert gguf.convert(hf_dir, out, outtype="q8_0", converter=fake_tree) == out
    called = json.loads(out.read_text())
    assert called["args"][0] == str(hf_dir) and called["args"][-2:] == ["--outtype", "q8_0"]
    assert called["pythonpath"].split(":")[0] == str(fake_tree.resolve() / "gguf-py")
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # the temporary name is gone


def test_a_failed_conversion_leaves_nothing_and_shows_the_last_lines(fake_tree, hf_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(gguf, "missing_requirements", lambda: [])
    (hf_dir / "FAIL").write_text("")
    out = tmp_path / "gguf" / "model-f16.gguf"
    with pytest.raises(GGUFError, match="exit 1") as e:
        gguf.convert(hf_dir, out, converter=fake_tree)
    assert "BPE pre-tokenizer was not recognized" in str(e.value)
    assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize("case, match", [("outtype", "choose from f16, q8_0"), ("dir", "no config.json"),
                                         ("needs", "pip install no-such-module-xyz")])
def test_bad_conversions_are_refused_before_running(fake_tree, hf_dir, tmp_path, monkeypatch, case, match):
    monkeypatch.setattr(gguf, "_NEEDS", {"no_such_module_xyz": "no-such-module-xyz"} if case == "needs" else {})
    out = tmp_path / "m.gguf"
    with pytest.raises(GGUFError, match=match):
        gguf.convert(tmp_path if case == "dir" else hf_dir, out, outtype="q4_k" if case == "outtype" else "f16",
                     converter=fake_tree)
    assert not out.exists()


# ---------------------------------------------------------------- the token check


@pytest.fixture
def vocab_gguf(tmp_path) -> Path:
    """A GGUF holding only a vocabulary: <sep> CONTROL at 1, <dup> twice, <norm> NORMAL."""
    from gguf import GGUFWriter, TokenType

    path = tmp_path / "vocab.gguf"
    w = GGUFWriter(str(path), arch="llama")
    w.add_tokenizer_model("gpt2")
    w.add_token_list(["a", "<sep>", "<dup>", "<dup>", "<norm>"])
    w.add_token_types([TokenType.NORMAL, TokenType.CONTROL, TokenType.USER_DEFINED, TokenType.USER_DEFINED,
                       TokenType.NORMAL])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_token_check_reports_id_type_and_why_not_single(vocab_gguf):
    got = gguf.token_check(vocab_gguf, ["<sep>", "<dup>", "<norm>", "<gone>"], hf_ids={"<sep>": 1, "<norm>": 4})
    assert got["<sep>"] == {"single": True, "id": 1, "type": "CONTROL", "entries": 1, "hf_id": 1,
                            "matches_hf": True}
    assert (got["<dup>"]["single"], got["<dup>"]["entries"], got["<dup>"]["reason"]) == \
        (False, 2, "2 vocabulary entries (2, 3)")
    assert not got["<norm>"]["single"] and "NORMAL" in got["<norm>"]["reason"]
    assert got["<gone>"] == {"single": False, "id": None, "type": None, "entries": 0,
                             "reason": "not in the vocabulary", "hf_id": None, "matches_hf": False}
    assert "hf_id" not in gguf.token_check(vocab_gguf, ["<sep>"])["<sep>"]


def test_require_single_fails_loudly(vocab_gguf):
    gguf.require_single(vocab_gguf, gguf.token_check(vocab_gguf, ["<sep>"], {"<sep>": 1}))
    with pytest.raises(GGUFError, match=r"'<sep>' has id 1 in the GGUF but id 7 in the Hugging Face"):
        gguf.require_single(vocab_gguf, gguf.token_check(vocab_gguf, ["<sep>"], {"<sep>": 7}))
    with pytest.raises(GGUFError, match=r"vocab.gguf: '<gone>' is not in the vocabulary"):
        gguf.require_single(vocab_gguf, gguf.token_check(vocab_gguf, ["<sep>", "<gone>"]))


def test_unreadable_gguf_is_a_user_error(tmp_path):
    with pytest.raises(GGUFError, match="not found"):
        gguf.token_check(tmp_path / "none.gguf", ["<sep>"])
    (tmp_path / "bad.gguf").write_bytes(b"not a gguf at all")
    with pytest.raises(GGUFError, match="not a readable GGUF"):
        gguf.token_check(tmp_path / "bad.gguf", ["<sep>"])


# ---------------------------------------------------------------- the real converter (slow)


def _real_converter() -> Path:
    try:
        script = gguf.find_converter()
    except GGUFError as e:
        pytest.skip(f"no converter: {e}")
    if missing := gguf.missing_requirements():
        pytest.skip(f"the converter needs {', '.join(missing)}")
    return script


@pytest.fixture(scope="module")
def sep_dir(tiny_dir, tmp_path_factory) -> Path:
    """The tiny model with `<sep>` added as training adds it, rows padded to a multiple of 64 (49153 -> 49216)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from delia.models import add_special_tokens

    model, tok = AutoModelForCausalLM.from_pretrained(tiny_dir), AutoTokenizer.from_pretrained(tiny_dir)
    add_special_tokens(model, tok, ["<sep>"], pad_to_multiple_of=64)
    out = tmp_path_factory.mktemp("tiny-sep")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("outtype, ftype, tol", [("f16", "MOSTLY_F16", 2e-3), ("q8_0", "MOSTLY_Q8_0", 2e-2)])
def test_tiny_model_converts_with_sep_as_one_token(sep_dir, tmp_path, outtype, ftype, tol):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = gguf.convert(sep_dir, tmp_path / f"model-{outtype}.gguf", outtype=outtype, converter=_real_converter())
    report = gguf.check_tokens(out, sep_dir, ["<sep>", "<|im_end|>"])
    sep_id = AutoTokenizer.from_pretrained(sep_dir).convert_tokens_to_ids("<sep>")
    assert report["<sep>"] == {"single": True, "id": sep_id, "type": "CONTROL", "entries": 1, "hf_id": sep_id,
                               "matches_hf": True}
    facts = gguf.describe(out)
    assert (facts["architecture"], facts["file_type"], facts["vocab"]) == ("llama", ftype, 49216)
    assert facts["chat_template"] and facts["eos_id"] == report["<|im_end|>"]["id"]
    # the GGUF's weights are the model's: same logits when read back (transformers' GGUF loader), <sep> included
    ids = torch.tensor([[1, 4093, 198, 4182, sep_id, 2, 198, 1, 520, 9531, 198]])
    hf = AutoModelForCausalLM.from_pretrained(sep_dir).eval()
    back = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=out.name, dtype=torch.float32).eval()
    with torch.no_grad():
        a, b = hf(ids).logits, back(ids).logits
    assert a.shape == b.shape and (a - b).abs().max().item() < tol * a.abs().max().item()


def test_the_converter_runs_in_this_interpreter():
    """The subprocess uses this Python (the one with torch and transformers), not whatever `python` is on PATH."""
    assert gguf._command(Path("c.py"), Path("hf"), Path("o.gguf"), "f16")[0] == sys.executable
