"""Training tasks: which eval folder, which assistant target, and the tokenised examples.

A training example is the eval's own prompt (``evals/<task>/prompt.md``
rendered for a train row, passed through the tokenizer's chat template,
exactly as the hf backend does at eval time) followed by the assistant
target. Only the assistant tokens carry a loss; the prompt's labels are -100.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import FinetuneError

IGNORE_INDEX = -100


def _json_target(row: dict[str, Any]) -> str:
    # One line, the form the eval's json_valid() parses and the shortest for the model to emit.
    return json.dumps(row["expected"], ensure_ascii=False)


def _qa_target(row: dict[str, Any]) -> str:
    return str(row["reference"])


@dataclass(frozen=True)
class Task:
    """How to turn a train row into an assistant target."""

    name: str
    target: Callable[[dict[str, Any]], str]
    target_field: str


TASKS: dict[str, Task] = {
    "json_extraction": Task("json_extraction", _json_target, "expected"),
    "qa": Task("qa", _qa_target, "reference"),
}


@dataclass(frozen=True)
class TaskFiles:
    """The files a task trains from."""

    task: Task
    train_file: Path
    prompt_file: Path


def task_files(
    task: str | None, evals_dir: str, train_file: str | None, prompt_file: str | None
) -> TaskFiles:
    """Check the task name and that its files exist; raise one clear :class:`FinetuneError` otherwise."""
    if not task:
        raise FinetuneError(f"no task given; pass --task with one of: {', '.join(sorted(TASKS))}")
    if task not in TASKS:
        raise FinetuneError(f"unknown task {task!r}; known tasks: {', '.join(sorted(TASKS))}")
    folder = Path(evals_dir) / task
    train = Path(train_file) if train_file else folder / "train.jsonl"
    prompt = Path(prompt_file) if prompt_file else folder / "prompt.md"
    if not train.is_file():
        raise FinetuneError(
            f"train file {train} for task {task!r} does not exist; create it (JSONL, one row per example "
            f"with a '{TASKS[task].target_field}' field) or pass --train-file"
        )
    if not prompt.is_file():
        raise FinetuneError(
            f"prompt template {prompt} for task {task!r} does not exist; training uses the eval's own "
            "template, so create it or pass --set prompt_file=PATH"
        )
    return TaskFiles(TASKS[task], train, prompt)


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_messages(files: TaskFiles, max_examples: int = 0) -> list[tuple[str, list[dict[str, str]]]]:
    """Render every train row into (case id, messages + assistant target)."""
    from pytest_llmeval.dataset import load_cases
    from pytest_llmeval.errors import LLMEvalError
    from pytest_llmeval.prompts import load_template

    try:
        cases = load_cases(files.train_file)
        template = load_template(files.prompt_file)
        if max_examples:
            cases = cases[:max_examples]
        out = []
        for case in cases:
            if files.task.target_field not in case.data:
                raise FinetuneError(
                    f"{case.source}: row {case.id!r} has no '{files.task.target_field}' field, which task "
                    f"{files.task.name!r} trains on"
                )
            messages = template.render(case.data, case.id)
            messages.append({"role": "assistant", "content": files.task.target(case.data)})
            out.append((case.id, messages))
    except LLMEvalError as e:
        raise FinetuneError(str(e)) from None
    if not out:
        raise FinetuneError(f"train file {files.train_file} has no rows")
    return out


def chat_ids(encoded: Any) -> list[int]:
    # apply_chat_template(tokenize=True) returns a list in older and a BatchEncoding in newer transformers.
    if hasattr(encoded, "keys"):
        encoded = encoded["input_ids"]
    return list(encoded)


def tokenize_example(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[list[int], list[int]]:
    """Token ids and labels for one conversation whose last message is the assistant target.

    The prompt part is the chat template with ``add_generation_prompt=True``,
    which is what the model sees at eval time; its labels are IGNORE_INDEX.
    The labels keep the target and its end-of-turn token, and drop whatever
    the template appends after that (e.g. a newline).
    """
    prompt = chat_ids(tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=True))
    full = chat_ids(tokenizer.apply_chat_template(messages, tokenize=True))
    if full[: len(prompt)] != prompt:
        raise FinetuneError(
            "the tokenizer's chat template renders the prompt differently with and without the assistant "
            "turn, so prompt tokens cannot be masked reliably; use a model whose template is prefix-stable"
        )
    labels = [IGNORE_INDEX] * len(prompt) + full[len(prompt) :]
    eos = tokenizer.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
    for i in range(len(prompt), len(full)):
        if full[i] in eos_ids:
            labels[i + 1 :] = [IGNORE_INDEX] * (len(full) - i - 1)
            break
    return full, labels


@dataclass
class Example:
    """One tokenised training example."""

    id: str
    input_ids: list[int]
    labels: list[int]


@dataclass
class TrainData:
    """The tokenised examples of a run and what was left out."""

    examples: list[Example]
    skipped: list[str]  # ids longer than max_seq_len
    rows: int


def build_examples(
    tokenizer: Any, rows: list[tuple[str, list[dict[str, str]]]], max_seq_len: int
) -> TrainData:
    """Tokenise all rows; rows longer than ``max_seq_len`` are skipped, not truncated.

    Truncating would teach the model to stop mid-answer.
    """
    examples, skipped = [], []
    for cid, messages in rows:
        ids, labels = tokenize_example(tokenizer, messages)
        if len(ids) > max_seq_len:
            skipped.append(cid)
            continue
        examples.append(Example(cid, ids, labels))
    if not examples:
        raise FinetuneError(
            f"all {len(rows)} training examples are longer than max_seq_len={max_seq_len} tokens; "
            "raise it with --max-seq-len"
        )
    return TrainData(examples, skipped, len(rows))
