"""``tiny-markov``: a tiny model that sees only the latest observation.

For environments whose observation is the whole state (the grid puzzles: the board), the
history adds nothing but tokens. This model is the ``tiny`` Llama-style model and byte-level
tokenizer of :mod:`turngym.agents.models` with a chat template that renders only the last
message (the current observation) — the prompt stays a few dozen tokens however long the
episode, so every turn is a cheap policy step on a CPU. It is what the main job trains.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MARKOV_TEMPLATE", "load_tiny_markov"]

#: Renders the latest message only; the generation prompt opens the assistant's turn.
MARKOV_TEMPLATE = (
    "{{ '<|im_start|>' + messages[-1]['content'] + '<|im_end|>' }}"
    "{% if add_generation_prompt %}{{ '<|im_start|>' }}{% endif %}"
)


def load_tiny_markov(options: dict[str, str]) -> tuple[Any, Any]:
    """The ``tiny`` model (same options: hidden, layers, heads, ..., seed) with the Markov template."""
    from turngym.agents.models import load_tiny

    model, tokenizer = load_tiny(options)
    tokenizer.chat_template = MARKOV_TEMPLATE
    return model, tokenizer
