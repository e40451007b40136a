from __future__ import annotations

import pytest

from cache_dit.cache_factory import CacheType


@pytest.mark.parametrize(
    "name,expected",
    [
        ("dbcache", CacheType.DBCache),
        ("DB", CacheType.DBCache),
        ("Dual_Block_Cache", CacheType.DBCache),
        ("fb", CacheType.FBCache),
        ("FBCache", CacheType.FBCache),
        ("dbprune", CacheType.DBPrune),
        ("DBP", CacheType.DBPrune),
        ("none", CacheType.NONE),
        ("CacheType.DBCache", CacheType.DBCache),
        (CacheType.DBPrune, CacheType.DBPrune),
    ],
)
def test_type_aliases_are_case_insensitive(name, expected):
    assert CacheType.type(name) is expected


def test_unknown_type_lists_allowed():
    with pytest.raises(ValueError, match=r"allowed: .*DBCache"):
        CacheType.type("magic")


def test_default_options():
    db = CacheType.default_options(CacheType.DBCache)
    assert (db["Fn_compute_blocks"], db["Bn_compute_blocks"]) == (8, 8)
    assert (db["warmup_steps"], db["max_cached_steps"], db["residual_diff_threshold"]) == (8, -1, 0.12)
    fb = CacheType.default_options("fb")
    assert (fb["Fn_compute_blocks"], fb["Bn_compute_blocks"]) == (1, 0)
    assert (fb["residual_diff_threshold"], fb["warmup_steps"], fb["max_cached_steps"]) == (0.08, 8, 8)
    assert fb["cache_type"] is CacheType.FBCache
    # a fresh dict every call: callers may mutate it
    fb["warmup_steps"] = 0
    assert CacheType.default_options("fb")["warmup_steps"] == 8


def test_range_always_holds_first_and_last():
    assert CacheType.range(0, 8, 3) == [0, 3, 6, 7]
    assert CacheType.range(2, 10, 4) == [0, 2, 6, 9]
    assert CacheType.range(0, 4) == [0, 1, 2, 3]
    assert CacheType.range(0, 1, 5) == [0]
    with pytest.raises(ValueError, match="step must be >= 1"):
        CacheType.range(0, 8, 0)
    with pytest.raises(ValueError, match="start < end"):
        CacheType.range(5, 2)
