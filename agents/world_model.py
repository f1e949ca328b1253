"""``tiny-world``: the tiny model with a word-level vocabulary for the generated search worlds
(``turngym/SearchWorld-v0``; registered as a model spec in :mod:`turngym.agents.models`).

The ``tiny`` Llama-style model of :mod:`turngym.agents.models`, but its tokenizer makes every
word of the worlds' language (:data:`~turngym.envs.searchworld.world.VOCABULARY`: names,
countries, professions, template words), every year, every passage id and the pieces of a
tool call single tokens (BPE merges over the byte-level base, so any text still round-trips).
A name is then one or two tokens to copy from the question or a passage into a query, not a
dozen bytes to spell: the skill the recipe asks for is copying, and a 0.1M-parameter model can
learn copying in minutes where spelling would take it hours.

Its chat template drops the system message (the instructions and tool schemas: the same for
every episode, so they carry nothing a model trained from scratch can use) and renders the
other messages bare, so a prompt with the question and the last exchange is ~80 tokens.
Options as ``tiny`` (hidden, layers, heads, kv_heads, intermediate, max_positions, seed).
"""

from __future__ import annotations

from typing import Any

__all__ = ["WORLD_TEMPLATE", "WORLD_WORDS", "load_tiny_world", "world_tokenizer"]

WORLD_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] != 'system' %}"
    "{{ '<|im_start|>' + m['content'] + '<|im_end|>' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>' }}{% endif %}"
)


def _words() -> list[str]:
    import re

    from turngym.envs.search.env import HELP
    from turngym.envs.searchworld.env import SearchWorldEnv
    from turngym.envs.searchworld.world import _YEARS, VOCABULARY

    # what the environment itself writes: tool names and arguments, result and error lines
    chrome = HELP + SearchWorldEnv.instructions + " Results for No results Answer recorded Question error"
    ids = [f"d{i:02d}" for i in range(1, 33)]
    years = [str(y) for y in range(_YEARS[0], _YEARS[1] + 1)]
    return sorted(set(VOCABULARY + ids + years + re.findall(r"\w+", chrome)))


WORLD_WORDS: list[str] = _words()
"""The word-level vocabulary: each is one token wherever it appears."""


CALL_PIECES = ('<tool_call>{"name": "', '", "arguments": {"', '": "', '"}}</tool_call>')
"""The fixed text of a Hermes tool call, one token each: a call is then eight tokens."""


def world_tokenizer() -> Any:
    """Words of :data:`WORLD_WORDS` as single tokens, every other character as its bytes.

    Text is split into runs of word characters and single other characters (a space is its
    own token), and a run found in the vocabulary is taken whole (BPE with ``ignore_merges``:
    no merge can split it). So ``Alric`` is one and the same token in the question, in a
    passage and inside a tool call's quotes: copying a name is copying one id. Any text
    round-trips exactly (unknown runs fall back to byte tokens).
    """
    import re

    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from turngym.agents.models import TINY_SPECIAL_TOKENS

    vocab = {token: i for i, token in enumerate(TINY_SPECIAL_TOKENS)}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    for word in WORLD_WORDS + list(CALL_PIECES):  # ASCII: the byte-level alphabet writes it as
        vocab.setdefault(word.replace(" ", "\u0120"), len(vocab))  # is, but a space as "\u0120"
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], ignore_merges=True))
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex("|".join(map(re.escape, CALL_PIECES)) + r"|\w+|\W"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(TINY_SPECIAL_TOKENS)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<|pad|>", eos_token="<|im_end|>",
                                        bos_token=None, unk_token=None, padding_side="left")
    tokenizer.chat_template = WORLD_TEMPLATE
    return tokenizer


def load_tiny_world(options: dict[str, str]) -> tuple[Any, Any]:
    import torch

    from turngym.agents.models import load_tiny

    seed = int(options.get("seed", 0))
    model, _ = load_tiny(options)
    tokenizer = world_tokenizer()
    with torch.random.fork_rng(devices=[]):  # the new rows from a private stream, as load_tiny does
        torch.manual_seed(seed + 1)
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    return model, tokenizer
