"""FrozenLake: walk from the start to the goal across a frozen lake without falling into a
hole. Maps are generated from a seed with a guaranteed path; moves are deterministic unless
``slippery`` (then a move slips sideways with probability ``slip_prob``, drawn from the env's
seeded generator so episodes stay reproducible). A move off the board leaves you where you are,
or with ``off_board_invalid`` is an invalid reply (``invalid_penalty``, an observation saying why,
nothing moves); a slip sideways off the board always leaves you where you are.

Board text: ``S`` start, ``F`` frozen, ``H`` hole, ``G`` goal, ``P`` you (the start cell is
shown as ``F`` once you have left it). With ``show_neighbours`` a line under the board names the
four cells next to you (``u:F d:H l:- r:G``: up, down, left, right; ``-`` off the board): the
same state, with what a move decides written where a tiny model reads it without counting
columns (the board stays the whole state, so step-group anchors are unchanged in meaning).
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from turngym.envs.grid.moves import DIRECTIONS, INVALID_HELP, MoveArgs, MoveEnv
from turngym.envs.tasks import Task
from turngym.tools import ToolResult
from turngym.tools.base import ToolError

__all__ = ["FrozenLakeEnv", "generate_map", "shortest_path"]

Pos = tuple[int, int]


def shortest_path(rows: list[str]) -> list[str] | None:
    """Shortest move sequence from S to G avoiding holes (deterministic moves), or None."""
    n, m = len(rows), len(rows[0])
    start = next((r, c) for r in range(n) for c in range(m) if rows[r][c] == "S")
    parents: dict[Pos, tuple[Pos, str] | None] = {start: None}
    queue = deque([start])
    while queue:
        pos = queue.popleft()
        if rows[pos[0]][pos[1]] == "G":
            path = []
            while parents[pos] is not None:
                pos, move = parents[pos]  # type: ignore[misc]
                path.append(move)
            return path[::-1]
        for move, (dr, dc) in DIRECTIONS.items():
            nxt = (pos[0] + dr, pos[1] + dc)
            if 0 <= nxt[0] < n and 0 <= nxt[1] < m and nxt not in parents and rows[nxt[0]][nxt[1]] != "H":
                parents[nxt] = (pos, move)
                queue.append(nxt)
    return None


def generate_map(seed: int, size: int = 4, hole_frac: float = 0.2, min_path: int | None = None) -> tuple[list[str], list[str]]:
    """A map with a path from S to G, and its shortest solution.

    S and G are placed at random (at least ``min_path`` apart, default ``size``), holes cover
    ``hole_frac`` of the other cells; maps without a path are redrawn.
    """
    rng = np.random.default_rng(seed)
    min_path = size if min_path is None else min_path
    cells = [(r, c) for r in range(size) for c in range(size)]
    for _ in range(10_000):
        s, g = (cells[i] for i in rng.choice(len(cells), size=2, replace=False))
        if abs(s[0] - g[0]) + abs(s[1] - g[1]) < min_path:
            continue
        grid = [["F"] * size for _ in range(size)]
        grid[s[0]][s[1]], grid[g[0]][g[1]] = "S", "G"
        others = [p for p in cells if p not in (s, g)]
        for i in rng.choice(len(others), size=int(round(hole_frac * size * size)), replace=False):
            grid[others[i][0]][others[i][1]] = "H"
        rows = ["".join(r) for r in grid]
        path = shortest_path(rows)
        if path is not None:
            return rows, path
    raise RuntimeError(f"no map found for seed {seed}")


def _shown(cell: str) -> str:
    """A map cell as the board text shows it: the start is plain ice (``F``) like any other."""
    return "F" if cell == "S" else cell


class FrozenLakeEnv(MoveEnv):
    """Reach G from S without stepping into a hole H."""

    description = "FrozenLake: walk from S to G without stepping into a hole (text board)."
    _instructions = (
        "You are on a frozen lake. The board uses: P you, F frozen ice (safe), H hole (you fall in "
        "and lose), G goal, S start. Walk to G. {off_board} " + INVALID_HELP
    )
    instructions = _instructions.format(off_board="Moving off the board leaves you where you are.")

    def __init__(
        self,
        suite: Any = "frozenlake-4x4",
        split: str = "train",
        max_turns: int = 20,
        slippery: bool = False,
        slip_prob: float = 1 / 3,
        success_reward: float = 1.0,
        invalid_penalty: float = 0.0,
        off_board_invalid: bool = False,
        show_neighbours: bool = False,
        render_mode: str | None = None,
    ) -> None:
        super().__init__(suite=suite, split=split, max_turns=max_turns, render_mode=render_mode)
        self.slippery, self.slip_prob = slippery, slip_prob
        self.success_reward, self.invalid_penalty = success_reward, invalid_penalty
        self.off_board_invalid, self.show_neighbours = off_board_invalid, show_neighbours
        if off_board_invalid:
            self.instructions = self._instructions.format(off_board="A move off the board is an invalid reply.")
        self.rows: list[str] = []
        self.pos: Pos = (0, 0)

    def _board(self) -> str:
        out = []
        for r, row in enumerate(self.rows):
            chars = [_shown(ch) for ch in row]
            if r == self.pos[0]:
                chars[self.pos[1]] = "P"
            out.append("".join(chars))
        if self.show_neighbours:
            out.append(self._neighbours_line())
        return "\n".join(out)

    def _neighbours_line(self) -> str:
        """``u:F d:H l:- r:G``: the cell one move away in each direction (``-``: off the board)."""
        cells = []
        for move in DIRECTIONS:
            pos = self._neighbour(move)
            cell = "-" if pos is None else _shown(self.rows[pos[0]][pos[1]])
            cells.append(f"{move[0]}:{cell}")
        return " ".join(cells)

    def _reset_task(self, task: Task):
        self.rows = list(task.metadata["map"])
        self.pos = next((r, c) for r, row in enumerate(self.rows) for c, ch in enumerate(row) if ch == "S")
        board = self._board()
        return f"{task.prompt or 'Walk to the goal G.'}\n{board}", {"anchor": board}

    def _check_move(self, name: str, args: MoveArgs) -> MoveArgs:
        # Off the board, "stay where you are" makes a greedy policy that sees only the board repeat
        # the move until it runs out of turns (the board, its whole input, does not change); as an
        # invalid reply it costs invalid_penalty and the next observation says why.
        if self.off_board_invalid and self._neighbour(args.direction) is None:
            raise ToolError(f"moving {args.direction} leaves the board")
        return args

    def _neighbour(self, move: str) -> Pos | None:
        """The cell one ``move`` away from you, or None when that is off the board."""
        dr, dc = DIRECTIONS[move]
        row, col = self.pos[0] + dr, self.pos[1] + dc
        return (row, col) if 0 <= row < len(self.rows) and 0 <= col < len(self.rows[0]) else None

    def _move(self, args: MoveArgs) -> ToolResult:
        move = args.direction
        if self.slippery and self.np_random.random() < self.slip_prob:
            sideways = ["left", "right"] if move in ("up", "down") else ["up", "down"]
            move = sideways[int(self.np_random.integers(2))]
        self.pos = self._neighbour(move) or self.pos  # off the board: you stay where you are
        cell = self.rows[self.pos[0]][self.pos[1]]
        board = self._board()
        if cell == "G":
            return ToolResult(board + "\nYou reached the goal.", self.success_reward, True, {"success": True})
        if cell == "H":
            return ToolResult(board + "\nYou fell into a hole.", 0.0, True, {"success": False})
        return ToolResult(board)

    def _render_text(self) -> str:
        return self._board() if self.rows else ""

    def expert_reply(self) -> str | None:
        if not self.rows:
            return None
        rows = ["".join("S" if (r, c) == self.pos else ("F" if ch == "S" else ch) for c, ch in enumerate(row)) for r, row in enumerate(self.rows)]
        path = shortest_path(rows)
        return f"<action>{path[0]}</action>" if path else None

    def example_actions(self) -> list[str]:
        return ["<action>up</action>", "<action>right</action>", '<tool_call>{"name": "move", "arguments": {"direction": "down"}}</tool_call>', "left"]
