"""turngym's own environments and suites.

Each environment family has a ``registration`` module with a ``register_all()`` that calls
``register`` / ``register_suite`` with lazy string entry points, so nothing heavy is imported
until ``make``. A new family adds one line to ``FAMILIES``.
"""

from __future__ import annotations

import importlib

FAMILIES = [
    "turngym.envs.grid.registration",
    "turngym.envs.search.registration",
    "turngym.envs.searchworld.registration",
    "turngym.envs.prover.registration",
    "turngym.envs.code.registration",
    "turngym.envs.gui.registration",
]


def register_all() -> None:
    for name in FAMILIES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name in (name, name.rsplit(".", 1)[0]):  # family not present in this build
                continue
            raise
        module.register_all()
