"""turngym — multi-turn tool-use environments for LLM agents, and a per-turn RL trainer.

The front door: ``turngym.make`` / ``turngym.register`` (Gymnasium's registry underneath),
task suites, and the ``turngym`` command line. The parts live in ``turngym.envs``,
``turngym.tools``, ``turngym.sandboxes``, ``turngym.agents`` and ``turngym.trainers``.
"""

from turngym.envs import (
    Task,
    TaskSuite,
    TurnEnv,
    UnknownEnvError,
    load_suite,
    make,
    register,
    register_suite,
    registered_envs,
)

__version__ = "0.1.0"

__all__ = [
    "Task",
    "TaskSuite",
    "TurnEnv",
    "UnknownEnvError",
    "__version__",
    "load_suite",
    "make",
    "register",
    "register_suite",
    "registered_envs",
]
