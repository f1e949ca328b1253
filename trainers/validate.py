"""The whole training config checked before anything heavy runs.

``turngym train`` calls :func:`validate_config` first: in seconds, with no model loaded and
nothing written, every part of the config is checked against what it names —

- ``run.out_dir``: not empty, not a file;
- ``estimator``: the name is a registered estimator, each option a parameter of its function,
  of the type that parameter declares;
- ``env``: the id is registered, each ``env.kwargs`` key a parameter of the environment's
  constructor (or one of its base classes' when it forwards ``**kwargs``) of the declared type;
  then the environment is made (its own option checks run) and both splits are looked up;
- ``policy``: the model spec names a registered model, a folder or a Hugging Face id; the
  device exists on this machine; the backend's and LoRA's packages are installed;
- ``rollout``: the environment backend exists (and Ray is installed for ``ray``), the memory
  strategy is registered, ``run.overlong_cache_tokens`` fits ``rollout.max_tokens``.

A problem is a :class:`~turngym.config.ConfigError` whose message is one sentence that starts
with the key to change.
"""

from __future__ import annotations

import difflib
import importlib.util
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, TypeAdapter, ValidationError

from turngym.config import ConfigError
from turngym.trainers.config import TrainConfig

__all__ = ["validate_config"]


def validate_config(config: TrainConfig) -> None:
    """Raise :class:`ConfigError` for the first problem in ``config`` (see the module docstring)."""
    for check in (_check_run, _check_estimator, _check_policy, _check_rollout, _check_env):
        check(config)


# -- run ----------------------------------------------------------------------------------------
def _check_run(config: TrainConfig) -> None:
    out = config.run.out_dir
    if not out.strip():
        raise ConfigError("run.out_dir is empty: name the run's folder (--out DIR)")
    if Path(out).expanduser().exists() and not Path(out).expanduser().is_dir():
        raise ConfigError(f"run.out_dir {out!r} is a file, not a folder")
    if config.run.overlong_cache_tokens > config.rollout.max_tokens:
        raise ConfigError(f"run.overlong_cache_tokens={config.run.overlong_cache_tokens} exceeds "
                          f"rollout.max_tokens={config.rollout.max_tokens}")


# -- arguments against a signature --------------------------------------------------------------
_LAX = ConfigDict(arbitrary_types_allowed=True)


def _parameters(fn: Callable[..., Any], skip: int) -> tuple[dict[str, inspect.Parameter], bool]:
    """``fn``'s named parameters after the first ``skip``, and whether it takes ``**kwargs``."""
    params = list(inspect.signature(fn).parameters.values())[skip:]
    named = {p.name: p for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    return named, any(p.kind is p.VAR_KEYWORD for p in params)


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    """``fn``'s resolved annotations; those that cannot be resolved here are left out (not checked)."""
    try:
        return typing.get_type_hints(fn)
    except Exception:  # a name imported only for type checkers: resolve what resolves
        module = vars(inspect.getmodule(fn) or typing)
        hints = {}
        for name, ann in getattr(fn, "__annotations__", {}).items():
            try:
                hints[name] = eval(ann, module) if isinstance(ann, str) else ann  # noqa: S307 - the module's own annotation
            except Exception:
                continue
        return hints


def _check_value(key: str, value: Any, hint: Any) -> None:
    try:
        TypeAdapter(hint, config=_LAX).validate_python(value)
    except ValidationError as err:
        raise ConfigError(f"{key}={value!r}: {err.errors()[0]['msg']}") from None
    except Exception:  # a type pydantic cannot check (a protocol, a forward reference): the callee will
        return


def _check_arguments(key: str, what: str, fns: list[Callable[..., Any]], skip: int, given: dict[str, Any]) -> None:
    """``given`` against the parameters of ``fns[0]`` and, while each takes ``**kwargs`` (which
    it may pass on), of the next (a class's ``__init__`` and its bases'). A name no signature
    declares is an error unless ``fns[0]`` takes ``**kwargs``: then the callee checks it."""
    known: dict[str, Any] = {}
    open_ended = forwards = False
    for i, fn in enumerate(fns):
        named, forwards = _parameters(fn, skip)
        open_ended = open_ended or (i == 0 and forwards)
        hints = _hints(fn)
        for name in named:
            known.setdefault(name, hints.get(name, Any))
        if not forwards:
            break
    for name, value in given.items():
        if name not in known:
            if open_ended:
                continue
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f" (it takes: {', '.join(known) or 'nothing'})"
            raise ConfigError(f"{key}.{name}: {what} takes no argument {name!r}{hint}")
        _check_value(f"{key}.{name}", value, known[name])


# -- estimator ----------------------------------------------------------------------------------
def _check_estimator(config: TrainConfig) -> None:
    from turngym.trainers.estimators import ESTIMATORS

    name = config.estimator.name
    fn = ESTIMATORS.get(name)
    if fn is None:
        close = difflib.get_close_matches(name, ESTIMATORS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"estimator.name: unknown estimator {name!r}{hint} (known: {', '.join(sorted(ESTIMATORS))})")
    _check_arguments("estimator.options", f"the {name} estimator", [fn], 1, config.estimator.options)


# -- policy -------------------------------------------------------------------------------------
def _check_policy(config: TrainConfig) -> None:
    from turngym.agents.models import ModelSpecError, check_model_spec

    policy = config.policy
    try:
        check_model_spec(policy.model)
    except ModelSpecError as err:
        raise ConfigError(f"policy.model: {err}") from None
    _check_device(policy.device)
    needs = {"vllm": "vllm (extra [gpu])"} if policy.backend == "vllm" else {}
    if policy.lora:
        needs["peft"] = "peft"
    for module, package in needs.items():
        if importlib.util.find_spec(module) is None:
            field = "policy.lora" if module == "peft" else "policy.backend"
            raise ConfigError(f"{field}: needs the {package} package, which is not installed")


def _check_device(name: str) -> None:
    if name == "auto":
        return
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"policy.device: {name!r} is not a device (auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"policy.device={name}: this machine has no CUDA GPU that torch can use; use auto or cpu")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"policy.device={name}: this machine has {count} CUDA GPU(s) (cuda:0 to cuda:{count - 1})")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"policy.device={name}: MPS is not available on this machine; use auto or cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"policy.device={name}: turngym trains on cpu, cuda or mps")


# -- rollout ------------------------------------------------------------------------------------
def _check_rollout(config: TrainConfig) -> None:
    from turngym.agents.agent import MEMORY_STRATEGIES
    from turngym.agents.ray_pool import ENV_POOL_BACKENDS

    rollout = config.rollout
    if rollout.backend not in ENV_POOL_BACKENDS:
        raise ConfigError(f"rollout.backend: unknown backend {rollout.backend!r} (known: {', '.join(sorted(ENV_POOL_BACKENDS))})")
    if rollout.backend == "ray" and importlib.util.find_spec("ray") is None:
        raise ConfigError("rollout.backend=ray: Ray is not installed (pip install 'turngym[ray]')")
    if rollout.memory not in MEMORY_STRATEGIES:
        raise ConfigError(f"rollout.memory: unknown memory strategy {rollout.memory!r} "
                          f"(known: {', '.join(sorted(MEMORY_STRATEGIES))})")


# -- environment --------------------------------------------------------------------------------
def _check_env(config: TrainConfig) -> None:
    import gymnasium as gym

    from turngym.envs import SuiteError, UnknownEnvError, make

    env_cfg = config.env
    try:
        spec = _env_spec(env_cfg.id)
    except UnknownEnvError as err:
        raise ConfigError(f"env.id: {err}") from None
    if spec is not None:  # a SCHEME:REST id (openenv:URL) has no registry entry; making it checks its kwargs
        creator = spec.entry_point if callable(spec.entry_point) else gym.envs.registration.load_env_creator(spec.entry_point)
        if inspect.isclass(creator):
            fns, skip = [c.__init__ for c in creator.__mro__ if "__init__" in vars(c) and c is not object], 1
        else:
            fns, skip = [creator], 0
        _check_arguments("env.kwargs", env_cfg.id, fns, skip, env_cfg.kwargs)
    try:
        env = make(env_cfg.id, **env_cfg.kwargs)
    except (TypeError, ValueError) as err:  # the environment's own checks of its arguments
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"env.kwargs: {env_cfg.id} refused its arguments: {first}") from None
    try:
        suite = env.unwrapped.suite
        for key, split in (("env.train_split", env_cfg.train_split), ("env.eval_split", env_cfg.eval_split)):
            try:
                suite.split(split)
            except SuiteError as err:
                raise ConfigError(f"{key}: {err}") from None
        if env_cfg.train_tasks == "generated" and suite.generator is None:
            raise ConfigError(f"env.train_tasks: suite {suite.name!r} of {env_cfg.id} has no task generator; "
                              "use env.train_tasks=split (or auto)")
        if env_cfg.train_tasks == "generated" and config.multitask.key:
            raise ConfigError("env.train_tasks: MT-GRPO (multitask.key) balances the families of a frozen "
                              "split; use env.train_tasks=split (or auto)")
    finally:
        env.close()


def _env_spec(env_id: str) -> Any:
    import gymnasium as gym

    from turngym.envs.registration import ID_SCHEMES, load_plugins, make

    load_plugins()
    if env_id not in gym.registry and env_id.partition(":")[0] in ID_SCHEMES:
        return None  # made by its scheme's factory, not from the registry
    if env_id not in gym.registry:
        make(env_id)  # raises UnknownEnvError with its "did you mean"
    return gym.registry[env_id]
