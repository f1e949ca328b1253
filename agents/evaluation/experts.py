"""Expert replies for environments whose family does not (yet) define ``expert_action()``.

Seam: each function here belongs in its env family (e.g. ``SokobanEnv.expert_action``); once it
is there, the entry in ``scripted._EXPERTS`` and the function here go.
"""

from __future__ import annotations

from typing import Any

__all__ = ["sokoban_expert"]


def sokoban_expert(env: Any) -> str:
    """The first move of a shortest solution from the current Sokoban state."""
    from turngym.envs.grid.sokoban import solve

    moves = solve(env.level)
    if not moves:  # already solved or unsolvable from here: any legal-looking move
        return "<action>up</action>"
    return f"<action>{moves[0]}</action>"
