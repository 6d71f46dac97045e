"""A corpus of malformed example files, generated (no committed binaries), for the bad-input tests.

`UNIVERSAL` files break a rule every command enforces; `BY_USE` files are well-formed but unusable for some
commands. Each case names the line the error must point at (0: the file as a whole) and a phrase of the reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Case:
    name: str
    content: bytes | None  # None: a directory
    line: int
    reason: str
    suffix: str = ".jsonl"
    fails: tuple[str, ...] = ()  # for BY_USE cases: the commands that must reject it

    def write(self, root: Path) -> Path:
        path = root / f"{self.name}{self.suffix}"
        if self.content is None:
            path.mkdir(parents=True)
        else:
            path.write_bytes(self.content)
        return path


def _j(*rows: object) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def _chat(*turns: tuple[str, object]) -> dict:
    return {"messages": [{"role": r, "content": c} for r, c in turns]}


GOOD = _chat(("user", "What is 2 plus 3?"), ("assistant", "5"))
U, A = "user", "assistant"

UNIVERSAL: list[Case] = [
    Case("invalid_json", b'{"messages": [\n', 1, "invalid JSON"),
    Case("torn_last_line", _j(GOOD) + b'{"messages": [{"role": "us', 2, "invalid JSON"),
    Case("invalid_utf8", _j(GOOD) + b'{"query": "caf\xe9"}\n', 2, "not UTF-8 text: byte 0xe9"),
    Case("binary_garbage", bytes(range(256)), 1, "invalid JSON"),
    Case("utf16", '{"query": "hi"}\n'.encode("utf-16"), 1, "not UTF-8 text: byte 0xff"),
    Case("lone_surrogate", b'{"query": "a\\ud800b"}\n', 1, "query: lone surrogate U+D800"),
    Case("lone_surrogate_in_turn", _j(GOOD) + b'{"messages": [{"role": "user", "content": "\\udc00"}]}\n', 2,
         "messages[0].content: lone surrogate U+DC00"),
    Case("deep_nesting", b'{"query": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n", 1, "nested too deeply"),
    Case("nested_70_levels", ('{"query": "q", "x": ' + "[" * 70 + "]" * 70 + "}\n").encode(), 1,
         "nested deeper than 64 levels"),
    Case("a_directory", None, 0, "is a directory"),
    Case("empty_file", b"", 1, "file holds no rows"),
    Case("blank_lines_only", b"\n  \n\r\n", 1, "file holds no rows"),
    Case("row_is_a_list", b'[{"query": "a"}]\n', 1, "cannot tell the format"),
    Case("row_is_a_string", b'"hello"\n', 1, "cannot tell the format"),
    Case("row_is_null", _j(GOOD) + b"null\n", 2, "expected a JSON object, got null"),
    Case("row_is_a_number", b"42\n", 1, "cannot tell the format"),
    Case("mixed_formats", _j(GOOD, {"instruction": "Say hi", "input": "", "output": "hi"}), 2,
         "keys of the alpaca format"),
    Case("missing_format_key", _j({"instruction": "a", "output": "b"}, {"input": "x", "output": "y"}), 2,
         "instruction: missing"),
    Case("unknown_keys", _j({"foo": 1}), 1, "cannot tell the format from keys ['foo']"),
    Case("messages_not_a_list", _j({"messages": "hi"}), 1, "messages: expected a non-empty list"),
    Case("messages_empty", _j({"messages": []}), 1, "messages: expected a non-empty list"),
    Case("turn_not_an_object", _j({"messages": ["hi"]}), 1, "messages[0]: expected an object"),
    Case("unknown_role", _j(_chat(("bot", "x"))), 1, "messages[0].role: 'bot' is not one of"),
    Case("content_missing", _j({"messages": [{"role": "user"}]}), 1, "messages[0].content: missing"),
    Case("content_a_number", _j(_chat((U, 7))), 1, "messages[0].content: missing or not a string"),
    Case("content_a_list", _j(_chat((U, [{"type": "text", "text": "hi"}]))), 1, "messages[0].content"),
    Case("empty_user_turn", _j(_chat((U, "  "), (A, "x"))), 1, "messages[0].content: empty user turn"),
    Case("assistant_first", _j(_chat((A, "x"), (U, "y"))), 1, "the first turn (after any system turn) must be"),
    Case("two_user_turns", _j(GOOD, _chat((U, "a"), (U, "b"), (A, "c"))), 2, "two user turns in a row"),
    Case("system_not_first", _j(_chat((U, "a"), ("system", "s"), (A, "c"))), 1, "a system turn may only come"),
    Case("tool_first", _j(_chat(("tool", "t"), (U, "a"))), 1, "a tool turn must follow an assistant turn"),
    Case("empty_assistant_midway", _j(_chat((U, "a"), (A, ""), (U, "b"), (A, "c"))), 1,
         "messages[1].content: empty assistant turn before the end"),
    Case("duplicate_id", _j({"id": "x", **GOOD}, {"id": "x", **GOOD}), 2, "id: duplicate id 'x'"),
    Case("id_a_list", _j({"id": [1], **GOOD}), 1, "id: expected a string or integer"),
    Case("repeated_key", b'{"query": "a", "query": "b"}\n', 1, "query: key given twice"),
    Case("alpaca_instruction_number", _j({"instruction": 5, "output": "x"}), 1, "instruction: expected a string"),
    Case("alpaca_empty_instruction", _j({"instruction": " ", "output": "x"}), 1, "instruction: empty"),
    Case("alpaca_output_list", _j({"instruction": "x", "output": ["y"]}), 1, "output: expected a string"),
    Case("prompt_a_number", _j({"prompt": 5, "completion": "x"}), 1, "prompt: expected a string"),
    Case("completion_from_user", _j({"prompt": [{"role": U, "content": "a"}],
                                     "completion": [{"role": U, "content": "b"}]}), 1,
         "completion[0].role: a completion holds assistant"),
    Case("query_empty", _j({"query": "", "response": "x"}), 1, "query: empty"),
    Case("halu_label_maybe", _j({"context": "c", "label": "maybe"}), 1, "label: expected 'yes' or 'no'"),
    Case("translation_ref_empty", _j({"src": "a", "ref": ""}), 1, "ref: empty"),
    Case("array_with_garbage", b'[{"instruction": "a", "output": "b"}, {oops}]\n', 1, "invalid JSON",
         suffix=".json"),
    Case("array_of_numbers", b"[1, 2]\n", 1, "cannot tell the format", suffix=".json"),
    Case("json_not_an_array", b'{"instruction": "a"}\n', 1, "expected a JSON array of objects", suffix=".json"),
    Case("raw_nul_byte", b'{"query": "a\x00b"}\n', 1, "invalid JSON: Invalid control character"),
    Case("nan_content", b'{"query": NaN}\n', 1, "query: expected a string, got float"),
]

BY_USE: list[Case] = [
    Case("last_turn_from_user", _j(_chat((U, "a\n\n\nb"), (A, "c")), _chat((U, "a\n\n\nb"))), 2,
         "the last turn must be a non-empty assistant reply", fails=("train", "build")),
    Case("empty_final_reply", _j(_chat((U, "a\n\n\nb"), (A, "")),), 1,
         "the last turn must be a non-empty assistant reply", fails=("train", "build")),
    Case("halu_row_without_separator", _j(_chat((U, "no separator here"), (A, "{}"))), 1,
         "user turn has no '\\n\\n\\n'", fails=("eval", "build")),
    Case("query_with_two_turns", _j(_chat((U, "a"), (A, "b"), (U, "c"))), 1,
         "a query must be one user turn", fails=("sample", "train")),
]
