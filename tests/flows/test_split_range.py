from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flows.scaleout import split_range

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


@given(st.integers(min_value=1, max_value=10_000_000), st.integers(min_value=1, max_value=64))
def test_partitions_are_disjoint_and_cover_the_range(seconds, partitions):
    until = T0 + timedelta(seconds=seconds)
    ranges = split_range(T0, until, partitions)
    assert ranges[0][0] == T0 and ranges[-1][1] == until
    assert all(a_end == b_start for (_, a_end), (b_start, _) in zip(ranges, ranges[1:]))
    assert all(start < end for start, end in ranges)
    assert len(ranges) <= partitions


def test_bad_ranges_are_refused():
    with pytest.raises(ValueError):
        split_range(T0, T0, 2)
    with pytest.raises(ValueError):
        split_range(T0, T0 + timedelta(days=1), 0)
