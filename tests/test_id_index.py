"""The compact id index answers as the dict it replaced would (docs/architecture.md, live state)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from vpp_aggregator.domain.id_index import IdIndex

ids = st.text(min_size=0, max_size=12)  # any str: empty, non-ASCII, lone surrogates


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.lists(ids, max_size=30)), max_size=12))
def test_index_matches_a_dict_through_adds_and_removals(
    steps: list[tuple[bool, list[str]]],
) -> None:
    index, model, free, n = IdIndex(), {}, [], 0
    for remove, batch in steps:
        if remove:
            for rid in batch:
                if rid in model:
                    row = model.pop(rid)
                    index.remove(row)
                    free.append(row)
        else:
            new = list(dict.fromkeys(r for r in batch if r not in model))
            rows = []
            for rid in new:
                if free:
                    row = free.pop()
                else:
                    row, n = n, n + 1
                model[rid] = row
                rows.append(row)
            index.add(new, np.asarray(rows, dtype=np.int64))
        asked = batch + list(model) + ["never-registered"]
        expect = [model.get(r, -1) for r in asked]
        assert index.rows(asked).tolist() == expect
        # Asked again (the same ids, or some of them) before the next change: the remembered rows.
        assert index.rows(asked).tolist() == expect
        assert index.rows(asked[::-2]).tolist() == expect[::-2]
        assert len(index) == len(model)
        assert np.count_nonzero(index._table >= 0) == len(model)  # each id in the table once
        live = index.live_rows()
        assert sorted(zip(index.ids(live), live.tolist(), strict=True)) == sorted(model.items())


def test_many_ids_grow_the_table_and_reuse_removed_rows() -> None:
    index = IdIndex()
    names = [f"ev-{i:07d}" for i in range(50_000)]
    index.add(names, np.arange(50_000, dtype=np.int64))
    for row in range(0, 50_000, 2):
        index.remove(row)
    again = [f"bess-{i}" for i in range(25_000)]
    index.add(again, np.arange(0, 50_000, 2, dtype=np.int64))
    assert index.rows(names[1::2]).tolist() == list(range(1, 50_000, 2))
    assert (index.rows(names[::2]) == -1).all()
    assert index.rows(again).tolist() == list(range(0, 50_000, 2))
    assert index.ids(np.array([0, 1, 49_998])) == ["bess-0", "ev-0000001", "bess-24999"]
    assert len(index) == 50_000


def test_an_id_that_differs_only_after_its_hash_matched_is_not_taken_for_another() -> None:
    index = IdIndex()
    index.add(["abc"], np.array([0]))
    index._hash[0] = hash("abd")  # as if "abd" collided with the stored id
    index._rehash(1)
    assert index.rows(["abd"]).tolist() == [-1]
