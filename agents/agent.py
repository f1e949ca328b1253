"""The agent: what the model sees at each turn.

An :class:`Agent` turns an episode so far — the environment's instructions and tool schemas,
the task (the first observation), and the past exchanges (the model's reply and what the
environment answered) — into the next prompt. It holds no episode state of its own; the
rollout engine keeps one :class:`EpisodeMemory` per episode.

The contract
------------
- Messages: ``system`` (``env.instructions``), ``user`` (the task), then for each remembered
  exchange ``assistant`` (the reply as generated) and the environment's answer. An answer to
  a turn that ran tool calls is a tool message (``AgentConfig.tool_role``, ``"tool"`` by
  default; chat templates mark it as tool output, e.g. Qwen's ``<tool_response>``); other
  answers are ``user`` messages. Tool output never goes into the system prompt.
- Tools: ``tokenizer.apply_chat_template(messages, tools=[schemas], add_generation_prompt=True)``.
  A template that ignores ``tools`` (it renders the same with and without them) gets the
  schemas listed in the system message instead, in the Hermes format, so the model still
  learns what it may call.
- Memory: a registered strategy (:data:`MEMORY_STRATEGIES`) picks the exchanges to show —
  ``full`` (all) or ``window`` (the last ``memory_window``); the task and the latest
  observation are always shown. With ``max_prompt_tokens`` the oldest exchanges are dropped
  until the prompt fits (or none are left).
- Exact ids: with a tokenizer the prompt is rendered to text and encoded once; the ids are the
  ones the policy is given and the ones the trainer trains on. Response ids are never
  re-derived from text: they are what the policy generated (:class:`~turngym.agents.trajectory.Turn`).
- Token in, token out: when a prompt shows every exchange and the last one came from a prompt
  that showed all before it (``full`` memory; ``window`` until it starts dropping exchanges),
  the prompt is the last prompt's ids + the reply's ids as sampled (:attr:`Exchange.response_ids`)
  + the encoding of only what the template adds after the reply: the end-of-turn marker (left
  out when the model sampled it as its last token) and the new messages. The model then always
  continues exactly the tokens it saw and sampled (re-encoding the reply's text can tokenise it
  differently), and each turn's prompt + response is a token prefix of the next turn's prompt,
  which lets the trainer pack a trajectory into one sequence. A prompt that drops exchanges, a
  template that does not render the conversation as an extension of the last prompt and the
  reply's text (one that rewrites past replies), or an extension over ``max_prompt_tokens``
  is rendered and encoded whole instead.
- Message dicts are made once per exchange and shared by later prompts: a policy must not
  mutate the messages it is given. Tool schema lists are shared too (an environment pool gives
  the episodes of one environment family the same list; its system-message listing is
  rendered once per list).
- Without a tokenizer (an HTTP policy that applies its own template) the prompt is the chat
  messages; tool schemas go into the system message — or, with ``native_tools`` (the policy
  sends them as the request's ``tools``, as OpenAI-compatible endpoints take them), nowhere in
  the messages — and tool answers are ``user`` messages wrapped in ``<tool_output>`` markers
  unless the policy returned structured tool calls, in which case they are proper ``tool``
  messages answering those calls.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from turngym.agents.policy import Completion
from turngym.tools.parsers import PARSERS, detect_style, structured_action

__all__ = [
    "MEMORY_STRATEGIES",
    "Agent",
    "AgentConfig",
    "BuiltPrompt",
    "EpisodeMemory",
    "Exchange",
    "flat_call",
    "register_memory",
]


class AgentConfig(BaseModel):
    """How the agent builds prompts."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    memory: str = "full"
    """Memory strategy (a :data:`MEMORY_STRATEGIES` name): ``full`` or ``window``."""
    memory_window: int = Field(default=4, ge=0)
    """For ``window``: how many of the latest exchanges to show besides the task."""
    max_prompt_tokens: int | None = Field(default=None, gt=0)
    """Token budget of a prompt: the oldest exchanges are dropped first until it fits."""
    tool_role: str = "tool"
    """Chat role of an environment answer to a turn that ran tool calls (tokenizer mode)."""
    tool_call_style: str | None = None
    """Tool-call syntax the model writes (a turngym.tools.parsers style), named to each environment
    at reset; None: read from the tokenizer's chat template (detect_style), else hermes."""


@dataclass
class Exchange:
    """One past turn: the reply as the model wrote it and the environment's answer."""

    action: str
    observation: str
    tool_output: bool = False
    """Whether the answer is tool output (the turn ran tool calls)."""
    structured_calls: list[dict[str, Any]] = field(default_factory=list)
    """Tool calls the policy returned as structure (OpenAI-compatible endpoints)."""
    response_ids: list[int] = field(default_factory=list, repr=False)
    """The reply's token ids as the policy sampled them (tokenizer mode; empty when unknown)."""
    prompt: BuiltPrompt | None = field(default=None, repr=False, compare=False)
    """The prompt the reply was sampled from: with ``response_ids`` it is what the next prompt
    extends (token in, token out)."""
    rendered: dict[Any, list[dict[str, Any]]] = field(default_factory=dict, repr=False, compare=False)
    """The agent's messages for this exchange, made once and shared by every later prompt
    (a batch of long episodes then allocates a few objects per turn, not the whole history)."""


@dataclass
class EpisodeMemory:
    """What one episode has seen: the environment's instructions and tools, the task, the turns."""

    instructions: str
    tools: list[dict[str, Any]]
    """Tool schemas (``Tool.schema()``); read-only, possibly shared with other episodes."""
    task: str
    """The first observation."""
    history: list[Exchange] = field(default_factory=list)
    head: dict[Any, list[dict[str, Any]]] = field(default_factory=dict, repr=False, compare=False)
    """The agent's system and task messages, made once per episode."""


@dataclass
class BuiltPrompt:
    """A prompt ready for ``Policy.generate``."""

    messages: list[dict[str, Any]]
    ids: list[int] | None
    """Exact prompt token ids (tokenizer mode), else None."""
    text: str
    """The rendered prompt (tokenizer mode) or the messages as text."""
    shown: int
    """How many past exchanges the prompt shows."""
    over_budget: bool = False
    """True when even the smallest prompt exceeds ``max_prompt_tokens``."""

    @property
    def prompt(self) -> list[int] | list[dict[str, Any]]:
        return self.ids if self.ids is not None else self.messages


# -- memory strategies ---------------------------------------------------------------------------
#: name -> ``select(history, config) -> number of latest exchanges to show``.
MEMORY_STRATEGIES: dict[str, Callable[[list[Exchange], AgentConfig], int]] = {
    "full": lambda history, config: len(history),
    "window": lambda history, config: min(len(history), config.memory_window),
}


def register_memory(name: str, select: Callable[[list[Exchange], AgentConfig], int]) -> None:
    """Add a memory strategy: ``select(history, config)`` returns how many latest exchanges to show."""
    MEMORY_STRATEGIES[name] = select


#: Most schema lists whose rendered tool listing an agent keeps (see ``Agent._tools_block``).
_TOOL_BLOCKS = 64

TOOLS_SYSTEM_BLOCK = (
    "\n\n# Tools\n\nYou may call one or more functions. Their signatures are within <tools></tools>:\n"
    "<tools>\n{schemas}\n</tools>\n\n"
    "To call a function, reply with a JSON object within <tool_call></tool_call> tags:\n"
    '<tool_call>\n{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call>'
)


class Agent:
    """Builds each turn's prompt; see the module docstring for the contract."""

    def __init__(self, tokenizer: Any = None, config: AgentConfig | None = None, native_tools: bool = False) -> None:
        self.tokenizer = tokenizer
        self.config = config or AgentConfig()
        self.native_tools = native_tools and tokenizer is None
        if self.config.memory not in MEMORY_STRATEGIES:
            known = ", ".join(sorted(MEMORY_STRATEGIES))
            raise ValueError(f"unknown memory strategy {self.config.memory!r}; known: {known}")
        if tokenizer is not None and not getattr(tokenizer, "chat_template", None):
            raise ValueError("the tokenizer has no chat template; set tokenizer.chat_template or use a chat model")
        self._select = MEMORY_STRATEGIES[self.config.memory]
        self.tool_call_style = self.config.tool_call_style or detect_style(tokenizer)
        if self.tool_call_style not in PARSERS:
            raise ValueError(f"unknown tool-call style {self.tool_call_style!r}; known: {', '.join(sorted(PARSERS))}")
        self._template_shows_tools: bool | None = None
        self._atomic_ids: frozenset[int] | None = None
        self._tool_blocks: dict[int, tuple[list[dict[str, Any]], str]] = {}

    # -- the prompt ---------------------------------------------------------------------------
    def build(self, memory: EpisodeMemory) -> BuiltPrompt:
        """The prompt for the next turn of ``memory``'s episode."""
        history = memory.history
        shown = self._select(history, self.config)
        prompt = self._render(memory, shown)
        budget = self.config.max_prompt_tokens
        if budget is None or self._length(prompt) <= budget:
            return prompt
        # Fewer exchanges never make a longer prompt: binary-search the most that fit.
        lo, hi = 0, shown - 1  # answer in [lo, hi]; `shown` itself is over budget
        best = None
        while lo <= hi:
            mid = (lo + hi) // 2
            candidate = self._render(memory, mid)
            if self._length(candidate) <= budget:
                best, lo = candidate, mid + 1
            else:
                hi = mid - 1
        if best is not None:
            return best
        smallest = self._render(memory, 0)
        smallest.over_budget = True
        return smallest

    def messages(self, memory: EpisodeMemory, shown: int | None = None) -> list[dict[str, Any]]:
        """The chat messages of a prompt showing the latest ``shown`` exchanges (all if None)."""
        history = memory.history
        shown = len(history) if shown is None else shown
        text_mode = self.tokenizer is None
        key = (text_mode, self.config.tool_role)
        head = memory.head.get(key)
        if head is None:
            head = memory.head[key] = self._head_messages(memory, text_mode)
        msgs = list(head)
        start = len(history) - shown
        for index in range(start, len(history)):
            ex = history[index]
            rendered = ex.rendered.get(key)
            if rendered is None:
                rendered = ex.rendered[key] = self._exchange_messages(ex, index, text_mode)
            msgs.extend(rendered)
        if history and shown == 0:  # the latest observation is always shown
            msgs.append(self._answer_message(history[-1], len(history) - 1, text_mode, after_action=False))
        return msgs

    def _head_messages(self, memory: EpisodeMemory, text_mode: bool) -> list[dict[str, Any]]:
        system = memory.instructions
        if memory.tools and not self.native_tools and (text_mode or not self._shows_tools(memory.tools)):
            system += self._tools_block(memory.tools)
        head: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
        head.append({"role": "user", "content": memory.task})
        return head

    def _tools_block(self, tools: list[dict[str, Any]]) -> str:
        """The tool listing of a system message, rendered once per schema list: the environment
        pool gives every episode of an environment family the same (read-only) list."""
        hit = self._tool_blocks.get(id(tools))
        if hit is not None and hit[0] is tools:
            return hit[1]
        block = TOOLS_SYSTEM_BLOCK.format(schemas="\n".join(json.dumps(t) for t in tools))
        if len(self._tool_blocks) >= _TOOL_BLOCKS:  # lists made per episode (a remote pool's): no reuse
            self._tool_blocks.clear()
        self._tool_blocks[id(tools)] = (tools, block)  # holding the list keeps its id its own
        return block

    def _exchange_messages(self, ex: Exchange, index: int, text_mode: bool) -> list[dict[str, Any]]:
        assistant: dict[str, Any] = {"role": "assistant", "content": ex.action}
        if text_mode and ex.structured_calls:
            assistant["tool_calls"] = [
                {
                    "id": f"call_{index}_{k}",
                    "type": "function",
                    "function": {"name": name, "arguments": json.dumps(args)},
                }
                for k, (name, args) in enumerate(map(flat_call, ex.structured_calls))
            ]
        answers = [self._answer_message(ex, index, text_mode, after_action=True)]
        # every call id needs its own tool message; the environment answered them all at once
        answers += [{"role": "tool", "tool_call_id": f"call_{index}_{k}",
                     "content": f"(answered with call_{index}_0 above)"}
                    for k in range(1, len(assistant.get("tool_calls", [])))]
        return [assistant, *answers]

    def _answer_message(self, ex: Exchange, index: int, text_mode: bool, after_action: bool) -> dict[str, Any]:
        if text_mode and ex.structured_calls and after_action:
            # an assistant message with tool_calls must be answered by a tool message, even when
            # the environment rejected the call (OpenAI-compatible servers refuse it otherwise)
            return {"role": "tool", "tool_call_id": f"call_{index}_0", "content": ex.observation}
        if not ex.tool_output:
            return {"role": "user", "content": ex.observation}
        if text_mode:
            return {"role": "user", "content": _mark_tool_output(ex.observation)}
        return {"role": self.config.tool_role, "content": ex.observation}

    def _render(self, memory: EpisodeMemory, shown: int) -> BuiltPrompt:
        msgs = self.messages(memory, shown)
        if self.tokenizer is None:
            text = "\n".join(f"{m['role']}: {m['content']}" for m in msgs)
            return BuiltPrompt(messages=msgs, ids=None, text=text, shown=shown)
        text = self._template(msgs, memory.tools)
        ids = self._extend(memory, shown, text)
        if ids is None:
            # Encoded exactly as apply_chat_template(tokenize=True) does: the template already
            # holds the special tokens, so none are added.
            ids = self._encode(text)
        return BuiltPrompt(messages=msgs, ids=ids, text=text, shown=shown)

    def _extend(self, memory: EpisodeMemory, shown: int, text: str) -> list[int] | None:
        """Token in, token out (module doc): the ids of the prompt ``text`` as the last prompt's
        ids + the sampled reply + the newly encoded rest, or None where it must be encoded whole."""
        history = memory.history
        if not history or shown != len(history):
            return None
        last = history[-1]
        before = last.prompt
        if before is None or before.ids is None or not last.response_ids or before.shown != len(history) - 1:
            return None
        start = len(before.text)
        # the template must render the conversation as the last prompt, then the reply's text as
        # the agent gave it, then the rest (the end-of-turn marker, the new messages)
        if not (text.startswith(before.text) and text.startswith(last.action, start)):
            return None
        tail = text[start + len(last.action):]
        final = last.response_ids[-1]
        if final in self._atomic():  # an end-of-turn token the model sampled: it is in the ids already
            piece = self.tokenizer.convert_ids_to_tokens(final)
            if isinstance(piece, str) and tail.startswith(piece):
                tail = tail[len(piece):]
        ids = self._encode(tail)
        if self._decode(ids) != tail:  # a tokenizer that cannot encode a fragment on its own
            return None
        return [*before.ids, *last.response_ids, *ids]

    def _atomic(self) -> frozenset[int]:
        """Ids of special and added tokens: each is one whole piece of text that encoding never
        splits or merges, so it can end a reply's ids and open the text after it."""
        if self._atomic_ids is None:
            added = getattr(self.tokenizer, "added_tokens_decoder", None) or {}
            self._atomic_ids = frozenset(map(int, added)) | frozenset(getattr(self.tokenizer, "all_special_ids", ()))
        return self._atomic_ids

    def _decode(self, ids: list[int]) -> str:
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is not None:
            return backend.decode(ids, skip_special_tokens=False)
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def _encode(self, text: str) -> list[int]:
        # A fast tokenizer's Rust backend gives the same ids without transformers' per-call
        # input checks (a test holds the two equal).
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is not None:
            return list(backend.encode(text, add_special_tokens=False).ids)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _template(self, msgs: list[dict[str, Any]], tools: list[dict[str, Any]]) -> str:
        return self.tokenizer.apply_chat_template(
            msgs, tools=tools or None, add_generation_prompt=True, tokenize=False
        )

    def _shows_tools(self, tools: list[dict[str, Any]]) -> bool:
        """Whether the chat template renders the tool schemas it is given (checked once)."""
        if self._template_shows_tools is None:
            probe = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
            self._template_shows_tools = self._template(probe, tools) != self._template(probe, [])
        return self._template_shows_tools

    def _length(self, prompt: BuiltPrompt) -> int:
        return len(prompt.ids) if prompt.ids is not None else len(prompt.text)

    # -- the reply -------------------------------------------------------------------------------
    @staticmethod
    def action_text(completion: Completion) -> str:
        """What the environment is sent: the reply text, plus structured tool calls as Hermes
        tags; well-formed structured calls also travel as themselves (a
        :class:`~turngym.tools.ToolAction`, which the tool contract reads without parsing)."""
        return structured_action(completion.text, [flat_call(call) for call in completion.tool_calls])


def flat_call(call: dict[str, Any]) -> tuple[str, Any]:
    """``(name, arguments)`` of a structured call, flat or OpenAI-nested, arguments decoded."""
    fn = call.get("function") if isinstance(call.get("function"), dict) else call
    args = fn.get("arguments", {})
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError:
            pass  # left as the model wrote it: the environment's parser reports it
    return str(fn.get("name", "")), args


def _mark_tool_output(text: str) -> str:
    if text.lstrip().startswith("<tool_output"):
        return text  # the environment marked it already (format_tool_output)
    return f"<tool_output>\n{text}\n</tool_output>"
