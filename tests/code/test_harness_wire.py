"""The grading harness's wire format: what crosses between the tests and the solution.

Plain values make the round trip exactly; nothing else can be sent; and no byte string, however
hostile, decodes to anything but plain built-in values (or a ValueError).
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from turngym.envs.code.harness import decode, encode

PLAIN_TYPES = (type(None), bool, int, float, complex, str, bytes, list, tuple, dict, set, frozenset)

hashable = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() | st.binary(),
    lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3), max_leaves=8)
values = st.recursive(
    hashable | st.complex_numbers(allow_nan=False),
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
    | st.dictionaries(hashable, inner, max_size=3) | st.sets(hashable, max_size=3),
    max_leaves=20)


def _same(a, b) -> bool:
    """Equal and of exactly the same types all the way down."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


@given(values)
@settings(max_examples=300, deadline=None)
def test_plain_values_round_trip_exactly(value):
    assert _same(decode(encode(value)), value)


EDGE_VALUES = [
    float("nan"), float("inf"), -0.0, 10**5000, -(2**200), "\ud800 lone surrogate", b"\x00\xff",
    complex(float("inf"), -1.5), {(1, "a"): [frozenset({2})], None: {}}, [[[[]]]], "",
]


@pytest.mark.parametrize("value", EDGE_VALUES, ids=[f"edge{i}" for i in range(len(EDGE_VALUES))])
def test_edge_values_round_trip(value):
    assert _same(decode(encode(value)), value)


class Sneaky(int):
    def __eq__(self, other):
        return True

    __hash__ = int.__hash__


@pytest.mark.parametrize("value", [Sneaky(3), [1, Sneaky(2)], {"k": object()}, (lambda: 1), iter([1]),
                                   range(3), bytearray(b"x"), type("S", (str,), {})("x")])
def test_anything_but_plain_data_is_refused(value):
    with pytest.raises(TypeError, match="only plain built-in data"):
        encode(value)


def test_nesting_is_bounded():
    deep: list = []
    for _ in range(300):
        deep = [deep]
    with pytest.raises(ValueError, match="nested too deeply"):
        encode(deep)
    with pytest.raises(ValueError):
        decode(b"l1:" * 300 + b"N")


@pytest.mark.parametrize("data", [b"", b"X", b"i;", b"s5:abc", b"l2:N", b"NN", b"s-1:", b"s99999999999999:",
                                  b"e1:l0:", b"d1:l0:N", b"f0x1p9999999;", b"iz;", b"s2:\xff\xfe"])
def test_malformed_bytes_raise_value_error(data):
    with pytest.raises(ValueError):
        decode(data)


def _plain_all_the_way(value) -> bool:
    if type(value) not in PLAIN_TYPES:
        return False
    if isinstance(value, dict):
        return all(_plain_all_the_way(k) and _plain_all_the_way(v) for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return all(_plain_all_the_way(v) for v in value)
    return True


@given(st.binary(max_size=200) | st.lists(st.sampled_from([b"N", b"T", b"l2:", b"t1:", b"d1:", b"e1:", b"i1f;",
                                                            b"s3:abc", b"f0x1p3;", b"c0x1p1;nan;", b"b1:"]),
                                          max_size=12).map(b"".join))
@settings(max_examples=500, deadline=None)
def test_hostile_bytes_decode_to_plain_values_or_value_error(data):
    try:
        value = decode(data)
    except ValueError:
        return
    assert _plain_all_the_way(value)
