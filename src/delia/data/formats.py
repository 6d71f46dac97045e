"""Input formats: each knows its keys, how to normalise a row to chat messages, and how to write it back.

Formats: messages (chat JSONL), alpaca (instruction/input/output), prompt_completion, query_response,
halu_test (context/label) and translation (src/ref). Registered in the `data format` registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from delia.data.records import ROLES, FieldError, Record
from delia.registry import registry

FORMATS = registry("data format")


@dataclass(frozen=True)
class Format:
    """A row format. `required` keys identify it; `parse` returns (messages, fields); `dump` inverts it."""

    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    parse: Callable[[dict[str, Any]], tuple[list[dict[str, str]], dict[str, Any]]]
    dump: Callable[[Record], dict[str, Any]]

    @property
    def keys(self) -> tuple[str, ...]:
        return self.required + self.optional


def _str(obj: dict[str, Any], key: str, required: bool = True, allow_empty: bool = False) -> str:
    if key not in obj:
        if required:
            raise FieldError(key, "missing")
        return ""
    value = obj[key]
    if not isinstance(value, str):
        raise FieldError(key, f"expected a string, got {type(value).__name__}")
    if required and not allow_empty and not value.strip():
        raise FieldError(key, "empty")
    return value


def _turns(value: Any, key: str, allow_empty: bool = False) -> list[dict[str, str]]:
    if not isinstance(value, list) or (not value and not allow_empty):
        raise FieldError(key, "expected a non-empty list of {role, content} turns")
    out = []
    for i, turn in enumerate(value):
        if not isinstance(turn, dict):
            raise FieldError(f"{key}[{i}]", "expected an object with role and content")
        role, content = turn.get("role"), turn.get("content")
        if role not in ROLES:
            raise FieldError(f"{key}[{i}].role", f"{role!r} is not one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise FieldError(f"{key}[{i}].content", "missing or not a string")
        out.append({"role": role, "content": content})
    return out


def check_order(turns: list[dict[str, str]], key: str) -> None:
    """Roles in an order every chat template accepts: an optional system turn first, then user and assistant
    turns alternating from a user turn (tool turns after an assistant turn). A user turn may not be empty, nor
    an assistant turn that another turn follows; whether the final reply may be empty is the reader's call
    (training and build need one, sampling and evaluation do not).
    """
    prev = None
    for i, t in enumerate(turns):
        where, role = f"{key}[{i}]", t["role"]
        if role == "system":
            if i:
                raise FieldError(f"{where}.role", "a system turn may only come first")
        elif role == "tool":
            if prev not in ("assistant", "tool"):
                raise FieldError(f"{where}.role", "a tool turn must follow an assistant turn")
        elif prev in (None, "system") and role != "user":
            raise FieldError(f"{where}.role", f"the first turn (after any system turn) must be from the user, "
                                              f"not {role!r}")
        elif role == prev:
            raise FieldError(f"{where}.role", f"two {role} turns in a row; user and assistant turns alternate")
        if role == "user" and not t["content"].strip():
            raise FieldError(f"{where}.content", "empty user turn")
        if role == "assistant" and i < len(turns) - 1 and not t["content"].strip():
            raise FieldError(f"{where}.content", "empty assistant turn before the end of the chat")
        prev = role
    if not any(t["role"] == "user" for t in turns):
        raise FieldError(key, "no user turn")


def _messages(value: Any, key: str) -> list[dict[str, str]]:
    out = _turns(value, key)
    check_order(out, key)
    return out


def _split(record: Record) -> tuple[str, str | None]:
    """(user text, response) of a single-turn view, for writing chat rows in flat formats."""
    users = [t["content"] for t in record.prompt_messages if t["role"] == "user"]
    if len(users) != 1 or len(record.prompt_messages) > 1 + (record.prompt_messages[0]["role"] == "system"):
        raise ValueError(f"{record.where}: a multi-turn chat cannot be written as a flat prompt/response row")
    return users[0], record.response


# ---- messages


def _parse_messages(obj):
    return _messages(obj["messages"], "messages"), {}


def _dump_messages(r: Record):
    return {"messages": r.messages}


# ---- alpaca


def _parse_alpaca(obj):
    instruction = _str(obj, "instruction")
    inp = _str(obj, "input", required=False)
    if "output" in obj and not isinstance(obj["output"], str):
        raise FieldError("output", f"expected a string, got {type(obj['output']).__name__}")
    user = instruction + (f"\n\n{inp}" if inp.strip() else "")
    messages = [{"role": "user", "content": user}]
    if obj.get("output"):
        messages.append({"role": "assistant", "content": obj["output"]})
    fields = {"instruction": instruction, "input": inp}
    if "output" in obj:
        fields["output"] = obj["output"]
    if "input" not in obj:
        fields.pop("input")
    return messages, fields


def _dump_alpaca(r: Record):
    if r.fmt == "alpaca":
        return dict(r.fields)
    user, response = _split(r)
    return {"instruction": user, "input": "", "output": response or ""}


# ---- prompt / completion (strings, or conversational lists as TRL accepts)


def _parse_prompt_completion(obj):
    prompt, completion = obj.get("prompt"), obj.get("completion")
    if prompt is None:
        raise FieldError("prompt", "missing")
    msgs = _turns(prompt, "prompt") if isinstance(prompt, list) else [
        {"role": "user", "content": _str(obj, "prompt")}]
    n_prompt = len(msgs)
    if isinstance(completion, list):
        done = _turns(completion, "completion", allow_empty=True)
        for i, t in enumerate(done):
            if t["role"] not in ("assistant", "tool"):
                raise FieldError(f"completion[{i}].role", f"a completion holds assistant (or tool) turns, not "
                                                          f"{t['role']!r}")
        msgs += done
    elif completion is not None:
        msgs.append({"role": "assistant", "content": _str(obj, "completion", allow_empty=True)})
    try:
        check_order(msgs, "prompt")
    except FieldError as e:  # name the completion's turns by their own index
        if e.field and e.field.startswith("prompt[") and int(e.field[7:].split("]")[0]) >= n_prompt:
            i = int(e.field[7:].split("]")[0]) - n_prompt
            raise FieldError(f"completion[{i}]{e.field.split(']', 1)[1]}", e.reason) from None
        raise
    return msgs, {"prompt": prompt, **({"completion": completion} if "completion" in obj else {})}


def _dump_prompt_completion(r: Record):
    if r.fmt == "prompt_completion":
        return dict(r.fields)
    user, response = _split(r)
    return {"prompt": user, "completion": response or ""}


# ---- query / response


def _parse_query_response(obj):
    query = _str(obj, "query")
    msgs = [{"role": "user", "content": query}]
    fields = {"query": query}
    if "response" in obj:
        fields["response"] = _str(obj, "response", allow_empty=True)
        if fields["response"]:
            msgs.append({"role": "assistant", "content": fields["response"]})
    return msgs, fields


def _dump_query_response(r: Record):
    if r.fmt == "query_response":
        return dict(r.fields)
    user, response = _split(r)
    return {"query": user, "response": response or ""}


# ---- halu test: context + yes/no label; the instruction is added at evaluation time


def _parse_halu(obj):
    context = _str(obj, "context")
    label = obj.get("label")
    if label not in ("yes", "no"):
        raise FieldError("label", f"expected 'yes' or 'no', got {label!r}")
    return [{"role": "user", "content": context}], {"context": context, "label": label}


def _dump_halu(r: Record):
    if r.fmt == "halu_test":
        return dict(r.fields)
    raise ValueError(f"{r.where}: only halu_test rows can be written as halu_test (need context and label)")


# ---- translation pairs


def _parse_translation(obj):
    src = _str(obj, "src")
    ref = _str(obj, "ref")
    fields = {"src": src, "ref": ref}
    for k in ("src_lang", "tgt_lang"):
        if k in obj:
            fields[k] = _str(obj, k)
    return [{"role": "user", "content": src}, {"role": "assistant", "content": ref}], fields


def _dump_translation(r: Record):
    if r.fmt == "translation":
        return dict(r.fields)
    user, response = _split(r)
    return {"src": user, "ref": response or ""}


for _f in [
    Format("messages", ("messages",), (), _parse_messages, _dump_messages),
    Format("alpaca", ("instruction",), ("input", "output"), _parse_alpaca, _dump_alpaca),
    Format("prompt_completion", ("prompt",), ("completion",), _parse_prompt_completion, _dump_prompt_completion),
    Format("query_response", ("query",), ("response",), _parse_query_response, _dump_query_response),
    Format("halu_test", ("context", "label"), (), _parse_halu, _dump_halu),
    Format("translation", ("src", "ref"), ("src_lang", "tgt_lang"), _parse_translation, _dump_translation),
]:
    FORMATS.add(_f.name, _f, help=f"keys: {', '.join(_f.required)}" + (
        f" (optional: {', '.join(_f.optional)})" if _f.optional else ""))


def detect_format(obj: dict[str, Any]) -> Format | None:
    """The format whose required keys all appear in `obj` (the most specific one wins)."""
    matches = [FORMATS.get(n) for n in FORMATS if all(k in obj for k in FORMATS.get(n).required)]
    return max(matches, key=lambda f: len(f.required), default=None)
