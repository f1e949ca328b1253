import pytest

import turngym
from turngym.envs import load_suite
from turngym.envs.grid.frozenlake import generate_map, shortest_path
from turngym.envs.grid.moves import parse_move
from turngym.envs.grid.sokoban import Level, generate_level, solve


@pytest.mark.parametrize("reply,move", [
    ("<action>up</action>", "up"),
    ("I think <action> LEFT </action> is best", "left"),
    ('<tool_call>{"name": "move", "arguments": {"direction": "down"}}</tool_call>', "down"),
    ("right", "right"),
    ("<action>up</action><action>up</action>", "up"),
])
def test_parse_move_accepts(reply, move):
    assert parse_move(reply) == (move, "")


@pytest.mark.parametrize("reply,why", [
    ("<action>jump</action>", "unknown move 'jump'"),
    ("<action>up</action> then <action>left</action>", "one move per reply"),
    ('<tool_call>{"name": "move", "arguments": {"direction": "north"}}</tool_call>', "invalid arguments for move"),
    ('<tool_call>{"name": "move", "arguments": </tool_call>', "invalid tool call"),
    ('<tool_call>{"name": "fly", "arguments": {}}</tool_call>', "unknown tool 'fly'"),
    ("let me think", "no move found"),
    ("", "no move found"),
])
def test_parse_move_rejects(reply, why):
    move, reason = parse_move(reply)
    assert move is None and why in reason


@pytest.mark.parametrize("h,w,boxes", [(6, 6, 1), (7, 7, 2), (8, 8, 3)])
def test_generated_levels_are_solvable_by_their_solution(h, w, boxes):
    for seed in range(5):
        level, solution = generate_level(seed, h, w, boxes)
        assert len(level.boxes) == boxes and not level.solved()
        state = level
        for move in solution:
            state, _ = state.move(move)
        assert state.solved()
        assert len(solve(level)) == len(solution)  # the solution is a shortest one


def test_generation_is_deterministic():
    assert generate_level(7)[0].render() == generate_level(7)[0].render()
    assert generate_map(7, 6) == generate_map(7, 6)


def test_sokoban_rules():
    level = Level.parse("#####\n#P_X#\n#__O#\n#####")  # box against the wall: cannot be pushed right
    moved, pushed = level.move("right")
    assert moved.render() == "#####\n#_PX#\n#__O#\n#####" and not pushed
    stuck, pushed = moved.move("right")
    assert stuck is moved and not pushed
    level = Level.parse("#####\n#PXO#\n#####")
    done, pushed = level.move("right")
    assert pushed and done.solved() and done.render() == "#####\n#_PV#\n#####"


def test_every_suite_level_solves_with_its_recorded_answer():
    for name in ["sokoban-6x6-1", "sokoban-7x7-2", "sokoban-8x8-3"]:
        for task in load_suite(name):
            state = Level.parse(task.metadata["board"])
            for move in task.answer:
                state, _ = state.move(move)
            assert state.solved(), task.id
    for name in ["frozenlake-4x4", "frozenlake-6x6"]:
        for task in load_suite(name):
            assert len(shortest_path(task.metadata["map"])) == len(task.answer), task.id


@pytest.mark.parametrize("env_id", ["turngym/Sokoban-v0", "turngym/Sokoban-7x7-2-v0", "turngym/FrozenLake-v0"])
def test_replaying_the_solution_succeeds_with_anchor_of_prior_state(env_id):
    env = turngym.make(env_id)
    obs, info = env.reset(seed=3)
    task = env.unwrapped.task
    anchors, total = [info["anchor"]], 0.0
    for i, move in enumerate(task.answer):
        obs, reward, terminated, truncated, info = env.step(f"<action>{move}</action>")
        total += reward
        assert info["action_valid"] and info["tool_calls"] == [{"name": "move", "arguments": {"direction": move}}]
        assert terminated == (i == len(task.answer) - 1)
        anchors.append(info["anchor"])
    assert info["success"] is True and total >= 1.0
    assert anchors[0] in obs or anchors[0] != anchors[-1]
    assert len(set(anchors)) == len(anchors)  # a shortest solution never revisits a state


def test_invalid_reply_keeps_state_and_is_reported():
    env = turngym.make("turngym/Sokoban-v0")
    obs, info = env.reset(seed=0)
    board = info["anchor"]
    obs, reward, term, trunc, info = env.step("I will push the box!")
    assert info["action_valid"] is False and "Invalid action" in obs and board in obs
    assert info["anchor"] == board and reward == 0.0 and not term


def test_frozenlake_hole_ends_episode_without_success():
    env = turngym.make("turngym/FrozenLake-v0")
    task = next(t for t in load_suite("frozenlake-4x4") if "H" in "".join(t.metadata["map"]))
    rows = task.metadata["map"]
    env.reset(seed=0, options={"task": task})
    # walk into the first hole next to a reachable cell, found by breadth-first search
    from collections import deque

    start = next((r, c) for r, row in enumerate(rows) for c, ch in enumerate(row) if ch == "S")
    dirs = {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}
    prev, queue, path = {start: None}, deque([start]), None
    while queue and path is None:
        pos = queue.popleft()
        for name, (dr, dc) in dirs.items():
            nxt = (pos[0] + dr, pos[1] + dc)
            if not (0 <= nxt[0] < 4 and 0 <= nxt[1] < 4) or nxt in prev:
                continue
            prev[nxt] = (pos, name)
            if rows[nxt[0]][nxt[1]] == "H":
                path, cur = [], nxt
                while prev[cur] is not None:
                    cur, step = prev[cur]
                    path.append(step)
                path.reverse()
                break
            if rows[nxt[0]][nxt[1]] == "F":
                queue.append(nxt)
    assert path
    for move in path:
        obs, reward, term, trunc, info = env.step(move)
    assert term and info["success"] is False and reward == 0.0 and "hole" in obs


def test_turn_budget_truncates():
    env = turngym.make("turngym/Sokoban-v0", max_turns=3)
    env.reset(seed=0)
    results = [env.step("nonsense") for _ in range(3)]
    assert [r[3] for r in results] == [False, False, True]
    assert results[-1][4]["success"] is False


def test_seeded_reset_picks_the_same_task_and_split():
    a, b = turngym.make("turngym/Sokoban-v0", split="test"), turngym.make("turngym/Sokoban-v0", split="test")
    for seed in range(5):
        assert a.reset(seed=seed) == b.reset(seed=seed)
        assert a.unwrapped.task.split == "test"
    _, info = a.reset(options={"task": "sokoban-6x6-1-train-0007"})
    assert info["task_id"] == "sokoban-6x6-1-train-0007"


@pytest.mark.parametrize("env_id", ["turngym/Sokoban-v0", "turngym/Sokoban-8x8-3-v0", "turngym/FrozenLake-6x6-v0"])
def test_following_the_expert_solves_every_test_task_optimally(env_id):
    env = turngym.make(env_id, split="test")
    for task in env.unwrapped.suite.split("test")[:25]:
        env.reset(seed=0, options={"task": task})
        for turn in range(len(task.answer)):
            reply = env.unwrapped.expert_reply()
            obs, reward, terminated, truncated, info = env.step(reply)
        assert terminated and info["success"], task.id


@pytest.mark.parametrize("off_board_invalid", [False, True])
def test_frozenlake_move_off_the_board(off_board_invalid):
    """Every edge move of every test map's start: by default the player stays put (a valid move);
    with ``off_board_invalid`` the reply is invalid, costs ``invalid_penalty``, says why and leaves
    the board as it was — so a policy that sees only the board is not shown the same board again."""
    seen = 0
    for task in list(load_suite("frozenlake-4x4"))[:50]:
        rows = task.metadata["map"]
        start = next((r, c) for r, row in enumerate(rows) for c, ch in enumerate(row) if ch == "S")
        edges = [name for name, (dr, dc) in {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}.items()
                 if not (0 <= start[0] + dr < 4 and 0 <= start[1] + dc < 4)]
        for move in edges:
            env = turngym.make("turngym/FrozenLake-v0", invalid_penalty=0.1, off_board_invalid=off_board_invalid)
            _, info = env.reset(seed=0, options={"task": task})
            board = info["anchor"]
            obs, reward, term, trunc, info = env.step(f"<action>{move}</action>")
            assert info["anchor"] == board and not term and board in obs
            if off_board_invalid:
                assert info["action_valid"] is False and reward == pytest.approx(-0.1)
                assert obs.startswith(f"Invalid action (moving {move} leaves the board).")
            else:
                assert info["action_valid"] is True and reward == 0.0 and obs == board
            seen += 1
    assert seen > 10  # starts on an edge are common on 4x4 maps


def test_frozenlake_neighbour_line_names_the_cell_each_move_reaches():
    """With ``show_neighbours`` the last line of every observation names, for each direction, the
    cell a move that way lands on (``-`` off the board); walked on random moves over 40 test maps,
    the line is checked against where the move really goes and what the map has there."""
    import random

    rng, checked = random.Random(0), 0
    for task in load_suite("frozenlake-4x4").split("test")[:40]:
        rows = task.metadata["map"]
        env = turngym.make("turngym/FrozenLake-v0", show_neighbours=True, off_board_invalid=True)
        obs, info = env.reset(seed=0, options={"task": task})
        assert info["anchor"] == obs.split("\n", 1)[1]  # the board and its line are the state
        terminated = False
        while not terminated:
            line = dict(part.split(":") for part in obs.splitlines()[-1].split())
            assert set(line) == {"u", "d", "l", "r"}
            move = rng.choice(["up", "down", "left", "right"])
            pos = env.unwrapped.pos
            obs, reward, terminated, truncated, info = env.step(f"<action>{move}</action>")
            if line[move[0]] == "-":
                assert info["action_valid"] is False and env.unwrapped.pos == pos
            else:
                landed = env.unwrapped.pos
                assert rows[landed[0]][landed[1]].replace("S", "F") == line[move[0]]
                assert (line[move[0]] == "H") == (terminated and not info["success"])
            checked += 1
            terminated = terminated or truncated
    assert checked > 100
