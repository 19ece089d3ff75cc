"""The sandbox's time index answers "modified between" as a scan of the records would."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.store import Table

# (record number, modified ms): a write to that record at that time; ids repeat, times go both ways
writes = st.lists(st.tuples(st.integers(1, 40), st.integers(0, 60)), min_size=1, max_size=120)
bounds = st.tuples(st.none() | st.integers(-5, 65), st.booleans(), st.none() | st.integers(-5, 65), st.booleans())


def _scanned(table: Table, low, low_inclusive, high, high_inclusive) -> list[str]:
    def inside(ms: int) -> bool:
        above = low is None or (ms >= low if low_inclusive else ms > low)
        below = high is None or (ms <= high if high_inclusive else ms < high)
        return above and below

    chosen = [(ms, int(record_id), record_id) for record_id, ms in table.modified.items() if inside(ms)]
    return [record_id for _, _, record_id in sorted(chosen)]


@settings(max_examples=200, deadline=None)
@given(seeded=writes, later=writes, window=bounds)
def test_the_time_index_matches_a_scan_after_inserts_updates_and_touches(seeded, later, window):
    table = Table("contacts", sort_key=int)
    loaded = {str(number): ms for number, ms in seeded}
    table.bulk_load((record_id, {"n": record_id}, ms, ms) for record_id, ms in loaded.items())
    for step, (number, ms) in enumerate(later):
        record_id = str(number + (100 if step % 3 == 0 else 0))
        if record_id not in table:
            table.insert(record_id, {"n": record_id}, ms, ms)
        elif step % 2:
            table.update(record_id, {"n": f"{record_id}-{step}"}, ms)
        else:
            table.touch(record_id, ms)
    indexed = [entry[2] for entry in table.by_modified(*window)]
    assert indexed == _scanned(table, *window)
    assert len(table.by_modified()) == len(table)
