"""Turns and their JSON: one ``json_safe``; anchors and strata stay hashable through JSONL."""

from __future__ import annotations

import json

import numpy as np
import pytest

from turngym.agents.trajectory import (
    Trajectory,
    Turn,
    hashable_json,
    json_safe,
    read_jsonl,
    write_jsonl,
)


@pytest.mark.parametrize(("value", "expected"), [
    (np.array([[1, 2], [3, 4]]), [[1, 2], [3, 4]]),  # arrays as their values, not their repr
    (np.float32(0.5), 0.5),
    ((1, ("a", np.int64(2))), [1, ["a", 2]]),
    ({1: np.bool_(True), "k": None}, {"1": True, "k": None}),
    (object, repr(object)),
])
def test_json_safe_makes_numpy_and_containers_plain(value, expected):
    out = json_safe(value)
    assert out == expected and json.loads(json.dumps(out)) == expected


@pytest.mark.parametrize(("value", "expected"), [
    ("s", "s"),
    (3, 3),
    (None, None),
    (["q", ["d1", "d2"]], ("q", ("d1", "d2"))),  # what JSON made of a tuple anchor
    (("q", ("d1", "d2")), ("q", ("d1", "d2"))),
    (np.array([[1, 2]]), ((1, 2),)),
    (np.int64(7), 7),
    ({"y": [2], "x": 1}, (("x", 1), ("y", (2,)))),
    (frozenset({"b", "a"}), ("a", "b")),
])
def test_hashable_json_is_hashable_and_json_encodable(value, expected):
    out = hashable_json(value)
    assert out == expected and type(out) is type(expected)
    hash(out)
    assert hashable_json(json.loads(json.dumps(out))) == out  # JSON round trip


def test_hashable_json_keeps_a_tuple_of_plain_values_as_it_is():
    ids = ("d1", "d2", 3, None)
    assert hashable_json(ids) is ids and hashable_json(("q", ids))[1] is ids


def test_turn_anchors_and_strata_survive_the_jsonl_round_trip(tmp_path):
    turns = [Turn(step=0, anchor=("q", ("d1", np.int64(2))), stratum=np.int64(1)),
             Turn(step=1, anchor=[["board"], 3], stratum=("calls", 2)),
             Turn(step=2, anchor=None)]
    assert [t.anchor for t in turns] == [("q", ("d1", 2)), (("board",), 3), None]
    assert [t.stratum for t in turns] == [1, ("calls", 2), None]
    write_jsonl([Trajectory(traj_id="t", group_id="g", task_id="x", turns=turns)], tmp_path / "r.jsonl")
    assert '"anchor": ["q", ["d1", 2]]' in (tmp_path / "r.jsonl").read_text()
    (back,) = read_jsonl(tmp_path / "r.jsonl")
    assert [(t.anchor, t.stratum) for t in back.turns] == [(t.anchor, t.stratum) for t in turns]
    assert all(hash(t.anchor) == hash(u.anchor) for t, u in zip(back.turns, turns))
