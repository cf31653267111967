"""The holder's side of ``shard.fetch``: a reply is a prefix of the asked ids that fits the
reply budget, measured entry by entry, and always makes progress."""

from __future__ import annotations

import json

from calinode.node.index.wire import fetch_reply
from calinode.protocol.codec import pack, scan
from calinode.protocol.limits import Limits
from calinode.protocol.search_budget import SearchBudget

ROWS = {i: (f"doc-{i}", 0, "x" * 3000, json.dumps({"title": "t", "tags": list(range(50))}))
        for i in range(1, 201)}


def test_a_fetch_reply_is_a_prefix_that_fits_and_the_rest_is_asked_again() -> None:
    budget = SearchBudget(Limits(max_frame=64 * 1024, max_objects=2000))
    ids = [*ROWS, 999]  # 999: deleted since the search, simply absent
    got: dict[int, list[object]] = {}
    pages = 0
    while ids:
        reply = fetch_reply(ids, ROWS, text=True, budget=budget)
        payload = pack({"t": "res", "id": "x", "result": reply, "served_by": "p"},
                       limits=budget.limits)
        scan(payload, budget.limits)  # the receiver's limits hold
        assert 1 <= reply["done"] <= len(ids)
        assert [e[0] for e in reply["chunks"]] == [i for i in ids[:reply["done"]] if i in ROWS]
        got.update({e[0]: e for e in reply["chunks"]})
        ids = ids[reply["done"]:]
        pages += 1
    assert set(got) == set(ROWS) and pages > 5
    assert got[7] == [7, "doc-7", 0, "x" * 3000, {"title": "t", "tags": list(range(50))}]


def test_keys_only_and_one_oversized_chunk_still_progress() -> None:
    budget = SearchBudget(Limits(max_frame=4096))
    reply = fetch_reply([1, 2], ROWS, text=True, budget=budget)
    assert reply["done"] == 1 and len(reply["chunks"]) == 1  # one chunk always goes out
    keys = fetch_reply(list(ROWS), ROWS, text=False, budget=SearchBudget())
    assert keys["done"] == 200 and keys["chunks"][0] == [1, "doc-1", 0]
