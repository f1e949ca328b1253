"""Fixtures for the agent tests: a local byte-level chat tokenizer and a generic test env.

``ProbeEnv`` (like Gymnasium's tests/testing_env.py) takes its behaviour from each task's
metadata, so one batch can mix healthy, raising and hanging episodes:

- ``length``: tool calls ``advance`` needed to finish (terminated, success) — default 3;
- ``reward``: reward per valid step — default 0.25;
- ``raise_at`` / ``hang_at``: the step number (1-based) that raises / blocks until released;
- ``raise_on_reset``: reset raises;
- ``meet``: each step waits at ``ProbeEnv.barrier`` (so it passes only if steps overlap).
"""

from __future__ import annotations

import threading
from typing import Literal

import pytest
from pydantic import BaseModel

from turngym.envs import Task, TaskSuite, TurnEnv
from turngym.tools import Tool, parse_tool_calls

QWEN_STYLE_TEMPLATE = (  # the shape of Qwen2.5's template: literal text in {{- '...' }}
    "{%- if tools %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0].role == 'system' %}{{- messages[0].content + '\\n\\n' }}{%- endif %}"
    "{{- '# Tools\\n<tools>' }}{%- for tool in tools %}{{- '\\n' }}{{- tool | tojson }}{%- endfor %}"
    "{{- '\\n</tools>\\nFor each function call, return a json object within <tool_call></tool_call> XML tags.<|im_end|>\\n' }}"
    "{%- elif messages[0].role == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for m in messages %}"
    "{%- if m.role == 'tool' %}"
    "{{- '<|im_start|>user\\n<tool_response>\\n' + m.content + '\\n</tool_response><|im_end|>\\n' }}"
    "{%- elif m.role != 'system' %}"
    "{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
# Like SmolLM2-Instruct's template: plain ChatML that ignores `tools`.
PLAIN_CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tokenizer(template: str = QWEN_STYLE_TEMPLATE):
    """A byte-level tokenizer (any text encodes; decode is exact) with ChatML special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    hf.chat_template = template
    return hf


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="session")
def plain_tokenizer():
    return build_tokenizer(PLAIN_CHATML_TEMPLATE)


class AdvanceArgs(BaseModel):
    by: Literal[1, 2] = 1
    """How far to advance."""


ADVANCE = Tool("advance", "Advance the counter.", AdvanceArgs)
RELEASE = threading.Event()  # hanging steps block on this; set by the fixture at teardown


class ProbeEnv(TurnEnv):
    """A counter to advance to ``length``; behaviour injected per task (module docstring)."""

    instructions = "Advance the counter to the goal with the advance tool."
    created: list["ProbeEnv"] = []
    barrier: threading.Barrier | None = None
    lock = threading.Lock()

    def __init__(self, suite=None, split: str = "train", max_turns: int = 10) -> None:
        super().__init__(suite=suite, split=split, max_turns=max_turns)
        self.tools = [ADVANCE]
        self.closed = threading.Event()
        self.pos = 0
        with ProbeEnv.lock:
            ProbeEnv.created.append(self)

    def _reset_task(self, task: Task):
        if task.metadata.get("raise_on_reset"):
            raise RuntimeError("reset exploded")
        self.pos, self.calls = 0, 0
        self.noise = int(self.np_random.integers(1_000_000))  # seeds show in observations
        return f"Task {task.id}: reach {self.goal}. noise={self.noise}", {"anchor": "pos=0", "stratum": 0}

    @property
    def goal(self) -> int:
        return int(self.task.metadata.get("length", 3))

    def _step(self, action: str):
        meta = self.task.metadata
        if meta.get("raise_at") == self.turn:
            raise RuntimeError(f"step {self.turn} exploded")
        if meta.get("hang_at") == self.turn:
            RELEASE.wait(timeout=30)
        if meta.get("meet") and ProbeEnv.barrier is not None:  # proves steps run at the same time
            ProbeEnv.barrier.wait(timeout=10)
        parsed = parse_tool_calls(action)
        if not parsed.ok or parsed.calls[0].name != "advance":
            why = parsed.errors[0] if parsed.errors else "call the advance tool"
            return f"invalid: {why}", 0.0, False, {"action_valid": False, "anchor": f"pos={self.pos}", "stratum": self.calls}
        self.calls += 1
        self.pos += ADVANCE.validate(parsed.calls[0]).by
        done = self.pos >= self.goal
        info = {"anchor": f"pos={self.pos}", "stratum": self.calls, "tool_calls": [c.model_dump() for c in parsed.calls],
                "noise": self.noise + self.pos}
        if done:
            info["success"] = True
        return f"<tool_output>pos={self.pos}</tool_output>", float(meta.get("reward", 0.25)), done, info

    def close(self) -> None:
        self.closed.set()


def probe_suite(*tasks: dict) -> TaskSuite:
    return TaskSuite("probe", [Task(id=t.pop("id"), metadata=t) for t in map(dict, tasks)])


ADVANCE_REPLY = '<tool_call>{"name": "advance", "arguments": {"by": 1}}</tool_call>'


@pytest.fixture(autouse=True)
def _release_hanging_steps():
    RELEASE.clear()
    ProbeEnv.created.clear()
    yield
    RELEASE.set()
    ProbeEnv.barrier = None


@pytest.fixture
def probe():
    """The test env and helpers (conftest modules are not importable under importlib mode)."""
    from types import SimpleNamespace

    return SimpleNamespace(Env=ProbeEnv, suite=probe_suite, reply=ADVANCE_REPLY, release=RELEASE,
                           tool=ADVANCE, build_tokenizer=build_tokenizer)


@pytest.fixture(scope="module")
def tiny():
    """An HFPolicy over the randomly initialised ``tiny`` model (one torch thread while it lives)."""
    import torch

    from turngym.agents.hf import HFPolicy
    from turngym.agents.models import load_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model gains nothing from threads on a busy machine
    model, tokenizer = load_model("tiny:seed=0")
    yield HFPolicy(model, tokenizer)
    torch.set_num_threads(threads)
