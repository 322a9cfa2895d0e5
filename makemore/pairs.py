"""Instruction pairs: reading prompt/response records and the prompt template that joins them.

A record is `{"prompt", "response"}` or Alpaca's `{"instruction", "input", "output"}` (`input`
may be missing or empty); a file is JSON Lines (one record per line; blank lines skipped) or one
JSON list of records. Both shapes become a `Pair` (instruction, input, response).

A template is text with the placeholders `{instruction}`, `{input}` and `{response}`: it must hold
`{instruction}`, and `{response}` exactly once, at its end (what follows the response is the end
token, never template text). A paragraph (text between blank lines) that holds `{input}` is left
out when a record's input is empty, as Alpaca does. `{{` and `}}` are literal braces.
This module neither tokenizes nor splits: `data.Pairs` does.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass

from makemore.errors import MakemoreError
from safeio.files import shown

# Alpaca's layout (Taori et al. 2023) without its opening sentence: a small model spends its context on the task
DEFAULT_TEMPLATE = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n{response}"
FIELDS = ("instruction", "input", "response")
SHAPES = (("prompt", "response"), ("instruction", "output"))  # the fields each shape needs; Alpaca's "input" is optional


@dataclass(frozen=True)
class Pair:
    instruction: str
    input: str
    response: str


def claims(name: str) -> bool:
    """Whether a file name says instruction pairs (`--mode auto`)."""
    return name.lower().endswith((".jsonl", ".json"))


def read_records(text: str, name: str) -> list[Pair]:
    """The records of a JSON list or of JSON Lines; a malformed one is an error naming its number and field."""
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            values = json.loads(text)
        except json.JSONDecodeError as e:
            raise MakemoreError(f"{name}: not valid JSON (line {e.lineno}: {e.msg})") from None
        if not isinstance(values, list):
            raise MakemoreError(f"{name}: expected a JSON list of records or JSON Lines")
        return [to_pair(v, f"{name}: record {k}") for k, v in enumerate(values, start=1)]
    pairs = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{name}: record {len(pairs) + 1} (line {number})"
        try:
            value = json.loads(line)
        except json.JSONDecodeError as e:
            raise MakemoreError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
        pairs.append(to_pair(value, where))
    return pairs


def to_pair(value, where: str) -> Pair:
    if not isinstance(value, dict):
        raise MakemoreError(f"{where}: not a JSON object; a record is {{\"prompt\": ..., \"response\": ...}} "
                            f"or {{\"instruction\": ..., \"input\": ..., \"output\": ...}}")
    shape = next((s for s in SHAPES if s[0] in value), None)
    if shape is None:
        raise MakemoreError(f"{where}: no \"prompt\" or \"instruction\" field (it has {', '.join(map(repr, value)) or 'none'})")
    fields = (*shape, *(("input",) if shape[0] == "instruction" else ()))
    for key in fields:
        if key not in value and key != "input":
            raise MakemoreError(f"{where}: field \"{key}\" is missing")
        if not isinstance(value.get(key, ""), str):
            raise MakemoreError(f"{where}: field \"{key}\" must be a string, not {type(value[key]).__name__}")
    if not value[shape[0]].strip():
        raise MakemoreError(f"{where}: field \"{shape[0]}\" is empty")
    return Pair(value[shape[0]], value.get("input", ""), value[shape[1]])


def check_template(template: str, label: str = "`template`") -> str:
    """The template, if valid; else an error saying what is wrong with it."""
    try:
        names = [f for _, f, spec, conv in string.Formatter().parse(template) if f is not None]
    except ValueError as e:
        raise MakemoreError(f"{label}: {e} (write {{{{ and }}}} for literal braces)") from None
    unknown = sorted(set(names) - set(FIELDS))
    if unknown:
        raise MakemoreError(f"{label}: unknown placeholder {{{unknown[0]}}}; the placeholders are {{instruction}}, {{input}}, {{response}}")
    if "instruction" not in names:
        raise MakemoreError(f"{label}: no {{instruction}} placeholder")
    if names.count("response") != 1 or not template.rstrip("\n").endswith("{response}"):
        raise MakemoreError(f"{label}: {{response}} must appear once, at the end (the end token follows the response)")
    return template.rstrip("\n")


def render(template: str, instruction: str, input: str = "") -> str:
    """The prompt of a record: the template up to `{response}`, filled in; an empty input's paragraph left out."""
    head = template[: template.rindex("{response}")]
    if not input:
        head = "\n\n".join(p for p in head.split("\n\n") if "{input}" not in p)
    return head.format(instruction=instruction, input=input)
