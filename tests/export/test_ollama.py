"""The Ollama Modelfile: ChatML recognised by rendering, the Go template and SYSTEM that give HF's prompt, stops and
parameters, a clear refusal of other templates and of values a Modelfile cannot quote."""

from __future__ import annotations

import pytest

from delia.errors import UserError
from delia.export.ollama import CHATML_STOP, CHATML_TEMPLATE, OllamaError, chatml_system, modelfile, write_modelfile

SMOL_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
QWEN_LIKE = ("{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + "
             "'<|im_end|>\\n' }}{%- else %}{{- '<|im_start|>system\\nYou are Qwen.<|im_end|>\\n' }}{%- endif %}"
             "{%- for message in messages %}{%- if not (message.role == 'system' and loop.first) %}"
             "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}{%- endif %}"
             "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")
PLAIN_CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
                "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


@pytest.fixture(scope="module")
def tok(tiny_dir):
    """The SmolLM2 tokenizer the tiny models carry: its chat template is the real one."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_dir)


def commands(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, value) pairs, read as Ollama's parser reads them: a value opened by \"\"\" runs to the line
    that ends with \"\"\"; one opened by a single quote is unquoted; comments skipped."""
    out, lines = [], iter(text.splitlines())
    for line in lines:
        if not line or line.startswith("#"):
            continue
        name, value = line.split(" ", 1)
        if name == "PARAMETER":
            key, value = value.split(" ", 1)
            name = f"PARAMETER {key}"
        if value.startswith('"""'):
            while not (len(value) >= 6 and value.endswith('"""')):
                value += "\n" + next(lines)
            value = value[3:-3]
        elif value.startswith('"') and value.endswith('"'):
            value = value[1:-1]
        out.append((name, value))
    return out


def ollama_prompt(messages: list[dict[str, str]], system: str | None) -> str:
    """What Ollama renders from CHATML_TEMPLATE: the Modelfile's SYSTEM goes first unless the request starts with
    a system message (server/routes.go), then every message in ChatML (template/chatml.gotmpl)."""
    if system and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": system}] + messages
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages) + \
        "<|im_start|>assistant\n"


def test_smollm2_template_gives_a_chatml_modelfile(tok):
    text = modelfile("model-q8_0.gguf", tok.chat_template, stop=["<|im_end|>"], params={"temperature": 0})
    assert commands(text) == [("FROM", "./model-q8_0.gguf"), ("TEMPLATE", CHATML_TEMPLATE), ("SYSTEM", SMOL_SYSTEM),
                              ("PARAMETER stop", "<|im_end|>"), ("PARAMETER temperature", "0")]
    # Ollama's own ChatML template, byte for byte
    assert CHATML_TEMPLATE == ("{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
                               "<|im_start|>assistant\n")
    assert text.splitlines()[1] == "FROM ./model-q8_0.gguf"


@pytest.mark.parametrize("messages", [
    [{"role": "user", "content": "Is this English? <sep>\n\nHello there."}],
    [{"role": "system", "content": "Answer in JSON."}, {"role": "user", "content": "Hi <sep>"},
     {"role": "assistant", "content": '{"a": 1}'}, {"role": "user", "content": "Again"}],
])
def test_the_modelfile_renders_the_prompt_hf_renders(tok, messages):
    system = dict(commands(modelfile("m.gguf", tok.chat_template)))["SYSTEM"]
    hf = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert ollama_prompt(messages, system) == hf


def test_default_system_prompt_is_read_from_the_template(tok):
    assert chatml_system(tok.chat_template) == SMOL_SYSTEM
    assert chatml_system(QWEN_LIKE) == "You are Qwen."
    assert chatml_system(PLAIN_CHATML) is None
    assert "SYSTEM" not in dict(commands(modelfile("m.gguf", PLAIN_CHATML)))


def test_system_stop_and_params_choices(tok):
    got = commands(modelfile("m.gguf", tok.chat_template, system="Reply in JSON.", stop=None,
                             params={"num_ctx": 4096, "top_p": 0.9, "seed": 42}))
    assert ("SYSTEM", "Reply in JSON.") in got
    assert [v for k, v in got if k == "PARAMETER stop"] == list(CHATML_STOP)
    assert [(k, v) for k, v in got if k.startswith("PARAMETER") and k != "PARAMETER stop"] == [
        ("PARAMETER num_ctx", "4096"), ("PARAMETER top_p", "0.9"), ("PARAMETER seed", "42")]
    assert "SYSTEM" not in dict(commands(modelfile("m.gguf", tok.chat_template, system="")))
    stops = [v for k, v in commands(modelfile("m.gguf", PLAIN_CHATML, stop=["<|im_end|>", "###", "<|im_end|>"]))
             if k == "PARAMETER stop"]
    assert stops == ["<|im_end|>", "###"]  # repeats dropped, order kept


@pytest.mark.parametrize("template", [
    "{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}",  # Llama-2 style
    PLAIN_CHATML.replace("'<|im_start|>assistant\\n'", "'<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n'"),
    "{{ bos_token }}" + PLAIN_CHATML,  # a BOS the Go template would not write
    "{{ raise_exception('only user and assistant roles') }}",
    "{% for m in messages %",  # not even Jinja
    "",
])
def test_other_templates_are_refused_naming_what_is_supported(template):
    with pytest.raises(OllamaError, match="ChatML") as e:
        modelfile("m.gguf", template)
    assert isinstance(e.value, UserError) and isinstance(e.value, ValueError)


@pytest.mark.parametrize("kw, match", [
    ({"gguf_name": "gguf/model.gguf"}, "without a directory"),
    ({"system": 'say """hi"""'}, "cannot quote"),
    ({"stop": ['"""']}, "cannot quote"),
    ({"stop": [""]}, "empty stop"),
    ({"params": {"stop": "x"}}, "stop="),
    ({"params": {"Temperature": 0}}, "not an Ollama parameter name"),
    ({"params": {"temperature": None}}, "PARAMETER temperature"),
])
def test_values_a_modelfile_cannot_hold_are_refused(kw, match):
    args = {"gguf_name": "m.gguf", "chat_template": PLAIN_CHATML, **kw}
    with pytest.raises(OllamaError, match=match):
        modelfile(**args)


def test_write_modelfile_writes_beside_the_gguf_and_nothing_on_error(tmp_path, tok):
    path = write_modelfile(tmp_path / "gguf", "model-f16.gguf", tok.chat_template, stop=["<|im_end|>"])
    assert path == tmp_path / "gguf" / "Modelfile"
    assert path.read_text() == modelfile("model-f16.gguf", tok.chat_template, stop=["<|im_end|>"])
    assert [p.name for p in path.parent.iterdir()] == ["Modelfile"]  # no temporary file left
    with pytest.raises(OllamaError):
        write_modelfile(tmp_path / "other", "m.gguf", "{% for m in messages %}{{ m.content }}{% endfor %}")
    assert not (tmp_path / "other" / "Modelfile").exists()
