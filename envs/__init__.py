"""turngym.envs — the environment contract, the registry, the checker and the env families."""

from turngym.envs.core import INFO_KEYS, EnvUnavailable, TextSpace, TurnEnv, canonical_anchor
from turngym.envs.registration import (
    ENTRY_POINT_GROUP,
    UnknownEnvError,
    load_plugins,
    make,
    register,
    registered_envs,
)
from turngym.envs.tasks import (
    SuiteError,
    Task,
    TaskSuite,
    load_suite,
    register_suite,
    suite_description,
    suite_names,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "EnvUnavailable",
    "INFO_KEYS",
    "SuiteError",
    "Task",
    "TaskSuite",
    "TextSpace",
    "TurnEnv",
    "UnknownEnvError",
    "canonical_anchor",
    "load_plugins",
    "load_suite",
    "make",
    "register",
    "register_suite",
    "registered_envs",
    "suite_description",
    "suite_names",
]

from turngym.envs import builtin as _builtin  # noqa: E402  (registers turngym's own environments)

_builtin.register_all()
