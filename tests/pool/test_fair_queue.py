"""The fair queue's order, the guarantee behind the pool's fairness: an idle key's request waits for
at most the requests already running, whatever another key has queued; priorities weight the shares."""

from __future__ import annotations

import itertools

from homellm.pool.fair_queue import FairQueue


def drain(q: FairQueue[str]) -> list[str]:
    out = []
    while (t := q.pop(lambda _item: True)) is not None:
        out.append(t.item)
    return out


def test_a_newcomer_goes_before_the_second_of_a_flood() -> None:
    q: FairQueue[str] = FairQueue()
    for i in range(200):
        q.push("heavy", 1, f"h{i}")
    assert q.pop(lambda _: True).item == "h0"  # type: ignore[union-attr]  # now in service
    light = q.push("light", 1, "l0")
    assert q.position(light) == 0
    assert drain(q)[:2] == ["l0", "h1"]


def test_each_light_request_waits_for_at_most_one_heavy_one() -> None:
    """A light key sending one request at a time, while a heavy key keeps 200 queued: at most one heavy
    request is served between a light request's arrival and its turn (one service time, one slot)."""
    q: FairQueue[str] = FairQueue()
    heavy = itertools.count()
    for _ in range(200):
        q.push("heavy", 1, f"h{next(heavy)}")
    served_ahead = []
    for i in range(50):
        q.pop(lambda _: True)  # one heavy request is served, then the light one arrives
        q.push("heavy", 1, f"h{next(heavy)}")  # the flood is kept at 200
        q.push("light", 1, f"l{i}")
        ahead = 0
        while (t := q.pop(lambda _: True)) is not None and t.item != f"l{i}":
            ahead += 1
            q.push("heavy", 1, f"h{next(heavy)}")
        served_ahead.append(ahead)
    assert max(served_ahead) <= 1, served_ahead


def test_a_request_served_at_once_counts_in_its_keys_share() -> None:
    """The first of a flood gets a free slot without queueing; the rest queue behind it. A newcomer is
    still next: it waits for the running request only, not also for the flood's second."""
    q: FairQueue[str] = FairQueue()
    q.charge("heavy", 1)  # served at once
    for i in range(1, 200):
        q.push("heavy", 1, f"h{i}")
    light = q.push("light", 1, "l0")
    assert q.position(light) == 0
    assert drain(q)[0] == "l0"


def test_first_come_first_served_when_fairness_is_off() -> None:
    q: FairQueue[str] = FairQueue(fair=False)
    for i in range(200):
        q.push("heavy", 1, f"h{i}")
    light = q.push("light", 1, "l0")
    assert q.position(light) == 200
    assert drain(q).index("l0") == 200


def test_priorities_weight_the_shares() -> None:
    q: FairQueue[str] = FairQueue()
    for i in range(300):
        q.push("gold", 2, f"g{i}")
        q.push("bronze", 1, f"b{i}")
    first = drain(q)[:300]
    gold = sum(1 for x in first if x.startswith("g"))
    assert gold == 200  # two to one while both wait


def test_an_idle_key_earns_no_credit() -> None:
    """A key that was idle while others were served does not get a burst of turns afterwards."""
    q: FairQueue[str] = FairQueue()
    for i in range(100):
        q.push("a", 1, f"a{i}")
    for _ in range(50):
        q.pop(lambda _: True)
    for i in range(10):
        q.push("b", 1, f"b{i}")
    order = drain(q)[:20]
    assert order[:2] in (["b0", "a50"], ["a50", "b0"]) and sum(1 for x in order if x.startswith("b")) == 10
    assert all(x.startswith(("a", "b")) for x in order)
    assert max(len(list(g)) for _, g in itertools.groupby(x[0] for x in order)) <= 1  # strictly alternating


def test_a_slot_only_some_requests_can_use() -> None:
    """Each key offers its first request the freed slot can serve (another model's request keeps its place)."""
    q: FairQueue[str] = FairQueue()
    q.push("a", 1, "a:llama")
    q.push("a", 1, "a:qwen")
    q.push("b", 1, "b:qwen")
    t = q.pop(lambda item: item.endswith("qwen"))
    assert t is not None and t.item in ("a:qwen", "b:qwen")
    assert q.pop(lambda item: item.endswith("llama")).item == "a:llama"  # type: ignore[union-attr]


def test_a_removed_request_leaves_the_queue() -> None:
    q: FairQueue[str] = FairQueue()
    t = q.push("a", 1, "x")
    assert len(q) == 1 and q.waiting("a") == 1
    assert q.remove(t) and not q.remove(t)
    assert len(q) == 0 and q.pop(lambda _: True) is None
