"""An Ollama Modelfile for an exported GGUF: FROM, a Go TEMPLATE equivalent to the model's Jinja chat template,
SYSTEM, stop tokens and sampling parameters.

Jinja cannot be translated to Go templates in general, so we recognise one family and refuse the rest: ChatML
(`<|im_start|>ROLE\\nTEXT<|im_end|>\\n` per message, then `<|im_start|>assistant\\n`; SmolLM2, Qwen2.5). The check
renders the Jinja template (as transformers does) for probe conversations and compares the text with ChatML, so a
template that only looks like ChatML (a `<think>` block, tools, a BOS prefix) is refused rather than mistranslated.
The Go template is the one Ollama's own library uses for ChatML. A default system prompt the Jinja template adds
when the conversation has none becomes the Modelfile's SYSTEM: Ollama, too, adds SYSTEM only when the first
message is not a system message, so both render the same prompt.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from delia.errors import UserError
from delia.files import write_text_atomic

SUPPORTED = ("ChatML (<|im_start|>ROLE ... <|im_end|>, as in SmolLM2 and Qwen2.5)",)
# Ollama's template/chatml.gotmpl: the system message (if any) is the first of .Messages.
CHATML_TEMPLATE = ("{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
                   "<|im_start|>assistant\n")
CHATML_STOP = ("<|im_start|>", "<|im_end|>")  # Ollama's template/chatml.json
DEFAULT_PARAMS: dict[str, Any] = {"temperature": 0}  # greedy, as delia evaluates
_PARAM_NAME = re.compile(r"[a-z][a-z0-9_]*")
# Probe texts no real template contains, so where they land in the output shows the template's layout.
_SYS, _U1, _A1, _U2, _BOS, _EOS = "SYS-1d3f", "USER-8a2c", "ASSISTANT-5e7b", "USER-0c9d", "<BOS-probe>", "<EOS-probe>"


class OllamaError(UserError, ValueError):
    """A Modelfile cannot be written for this model (a chat template Ollama's syntax cannot express here)."""


def _chatml(messages: list[tuple[str, str]]) -> str:
    return "".join(f"<|im_start|>{role}\n{text}<|im_end|>\n" for role, text in messages) + "<|im_start|>assistant\n"


def _render(chat_template: str, messages: list[tuple[str, str]]) -> str:
    """The Jinja template applied as transformers applies it (sandboxed, trim_blocks, lstrip_blocks)."""
    from jinja2.exceptions import TemplateError
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.globals["raise_exception"] = raise_exception
    return env.from_string(chat_template).render(
        messages=[{"role": r, "content": c} for r, c in messages], add_generation_prompt=True,
        bos_token=_BOS, eos_token=_EOS, tools=None, documents=None)


def chatml_system(chat_template: str) -> str | None:
    """The default system prompt of a ChatML Jinja template (None when it adds none).

    Raises:
        OllamaError: the template does not render ChatML (or does not render at all).
    """
    if not chat_template or not chat_template.strip():
        raise OllamaError("the model has no chat template: an Ollama Modelfile needs one "
                          f"(supported: {'; '.join(SUPPORTED)})")
    turns = [("system", _SYS), ("user", _U1), ("assistant", _A1), ("user", _U2)]
    try:
        full, alone = _render(chat_template, turns), _render(chat_template, [("user", _U1)])
    except Exception as e:  # any Jinja error: a template we cannot vouch for
        raise OllamaError(f"the chat template does not render ({type(e).__name__}: {e}); "
                          f"Ollama export supports {'; '.join(SUPPORTED)}") from e
    tail = _chatml([("user", _U1)])
    default = re.fullmatch(r"<\|im_start\|>system\n(.*)<\|im_end\|>\n", alone[:-len(tail)], re.S) \
        if alone.endswith(tail) else None
    if full != _chatml(turns) or not (alone == tail or default):
        raise OllamaError("the chat template is not ChatML: it renders "
                          f"{_excerpt(full)}; Ollama export supports {'; '.join(SUPPORTED)} "
                          "(write the Modelfile's TEMPLATE by hand for others)")
    return default.group(1) if default else None


def _excerpt(text: str, n: int = 120) -> str:
    return repr(text if len(text) <= n else text[:n] + "...")


def modelfile(gguf_name: str, chat_template: str, stop: list[str] | None = None,
              params: dict[str, Any] | None = None, system: str | None = None) -> str:
    """The text of an Ollama Modelfile for the GGUF `gguf_name` lying beside it.

    Args:
        gguf_name: the GGUF's file name (FROM ./gguf_name; the Modelfile and the GGUF share a directory).
        chat_template: the model's Jinja chat template (tokenizer.chat_template); must be ChatML.
        stop: stop strings (PARAMETER stop each); None: CHATML_STOP. Ollama also stops at the GGUF's eos token.
        params: other PARAMETERs (name -> number, bool or string); None: DEFAULT_PARAMS.
        system: the SYSTEM prompt; None: the template's default system prompt (if any); "": no SYSTEM line.
    Raises:
        OllamaError: a non-ChatML template, or a name or value the Modelfile syntax cannot hold.
    """
    if not gguf_name or "/" in gguf_name or "\\" in gguf_name or not _one_line(gguf_name):
        raise OllamaError(f"{gguf_name!r}: give the GGUF's file name, without a directory")
    default = chatml_system(chat_template)
    system = default if system is None else system
    lines = ["# Ollama Modelfile written by `delia export`: ollama create NAME -f Modelfile",
             f"FROM ./{gguf_name}", f'TEMPLATE """{CHATML_TEMPLATE}"""']
    if system:
        lines.append(f'SYSTEM """{_checked(system, "SYSTEM")}"""')
    for s in dict.fromkeys(CHATML_STOP if stop is None else stop):  # dict: drop repeats, keep the order
        if not s:
            raise OllamaError("an empty stop string would stop every reply at once")
        lines.append(f'PARAMETER stop "{_checked(s, "stop")}"')
    for name, value in (DEFAULT_PARAMS if params is None else params).items():
        lines.append(f"PARAMETER {_param_name(name)} {_param_value(name, value)}")
    return "\n".join(lines) + "\n"


def _one_line(text: str) -> bool:
    return "\n" not in text and "\r" not in text


def _checked(text: str, what: str) -> str:
    """`text` if a quoted Modelfile value can hold it: the format has no escapes, so no triple quote."""
    if '"""' in text:
        raise OllamaError(f'{what} {_excerpt(text)} contains """, which a Modelfile cannot quote')
    return text


def _param_name(name: str) -> str:
    if name == "stop":
        raise OllamaError("give stop strings as stop=[...], not as a parameter")
    if not _PARAM_NAME.fullmatch(name):
        raise OllamaError(f"{name!r} is not an Ollama parameter name (lowercase letters, digits, _)")
    return name


def _param_value(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str) and value and _one_line(value) and '"' not in value:
        return f'"{value}"' if " " in value else value
    raise OllamaError(f"PARAMETER {name}: {value!r} is not a number, bool or one-line string without quotes")


def write_modelfile(out_dir: str | Path, gguf_name: str, chat_template: str, stop: list[str] | None = None,
                    params: dict[str, Any] | None = None, system: str | None = None) -> Path:
    """Write `out_dir/Modelfile` (atomically) with `modelfile(...)`; returns its path."""
    text = modelfile(gguf_name, chat_template, stop=stop, params=params, system=system)
    path = Path(out_dir) / "Modelfile"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)
    return path
