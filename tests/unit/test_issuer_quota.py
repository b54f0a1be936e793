"""The token writer's quota arithmetic: usage bounds that spare counts but never an answer."""

from __future__ import annotations

import random

from services.issuer.errors import QuotaReached
from services.issuer.store import Owner
from services.issuer.writer import Write, admit, demand, to_count
from shared.bus.outbox import Cause

CAUSE = Cause(None, None)
ANN: Owner = ("t", "ann", "user")
BOB: Owner = ("t", "bob", "user")
ANN_JOBS: Owner = ("t", "ann", "jobmanager")


def write(subject: str, count: int = 1, quota: int | None = 5, kind: str = "opaque") -> Write:
    return Write([{"tenant": "t", "subject": subject, "kind": kind}] * count, quota, CAUSE)


def test_demand_adds_up_each_owners_tokens_and_keeps_its_lowest_quota() -> None:
    writes = [
        write("ann", 2, quota=5),
        write("bob", 1, quota=5),
        write("ann", 1, quota=3),  # the tenant's quota was lowered meanwhile
        write("ann", 4, quota=None, kind="jwt_access"),  # no quota: asks nothing
        write("ann", 1, quota=5, kind="jobmanager"),  # the jobmanager namespace is apart
    ]
    wanted = demand(writes)
    assert wanted.asked == {ANN: 3, BOB: 1, ANN_JOBS: 1}
    assert wanted.quota == {ANN: 3, BOB: 5, ANN_JOBS: 5}


def test_only_owners_whose_bound_with_the_batch_passes_their_quota_are_counted() -> None:
    wanted = demand([write("ann", 2), write("bob", 2)])
    # Bounds once the batch is added: ann exactly at her quota, bob one past his.
    assert to_count(wanted, {ANN: 5, BOB: 6}) == [BOB]
    assert to_count(wanted, {ANN: 2, BOB: 2}) == []
    assert to_count(demand([write("ann", quota=None)]), {}) == []


def test_writes_are_admitted_in_order_until_the_quota_and_a_smaller_one_may_still_fit() -> None:
    writes = [write("ann", 1), write("ann", 3), write("ann", 1), write("bob", 2)]
    decisions, after = admit(writes, {ANN: 3, BOB: 0})
    assert [d is None for d in decisions] == [True, False, True, True]
    refused = decisions[1]
    assert isinstance(refused, QuotaReached) and "ann already has 5" in str(refused)
    assert after == {ANN: 5, BOB: 2}


def test_a_write_without_a_quota_is_always_admitted_and_takes_nothing() -> None:
    decisions, after = admit([write("ann", 9, quota=None, kind="jwt_access")], {})
    assert decisions == [None] and after == {}


def test_each_write_is_held_to_its_own_quota() -> None:
    decisions, after = admit([write("ann", 1, quota=5), write("ann", 1, quota=2)], {ANN: 1})
    assert [d is None for d in decisions] == [True, False]
    assert after == {ANN: 2}


def test_batches_through_usage_bounds_get_the_answers_exact_counts_would_give() -> None:
    """The writer's protocol with owner_usage, played against the true number of active tokens:
    bounds grow with every create, tokens expire behind their back, and only owners whose bound
    passes the quota are counted. Every answer must be the one an exact count gives, no owner
    may pass its quota, and a bound must never fall below the truth."""
    rng = random.Random(17)
    owners = ["ann", "bob", "cy"]
    truth = {(("t", o, "user")): 0 for o in owners}
    bound = dict(truth)
    counts = asked = 0
    for _ in range(2000):
        for owner in truth:  # some tokens expire or are revoked: the bound does not know
            truth[owner] -= rng.randint(0, min(truth[owner], 1))
        writes = [
            write(rng.choice(owners), rng.randint(1, 3), quota=rng.choice([4, 6, 6, 6]))
            for _ in range(rng.randint(1, 6))
        ]
        expected, _ = admit(writes, truth)

        wanted = demand(writes)
        for owner, n in wanted.asked.items():  # store.add_usage
            bound[owner] += n
        over = to_count(wanted, bound)
        counts += len(over)
        asked += len(wanted.asked)
        active = {owner: bound[owner] - wanted.asked[owner] for owner in wanted.asked}
        active.update({owner: truth[owner] for owner in over})  # store.count_active
        decisions, after = admit(writes, active)
        bound.update({owner: after[owner] for owner in over})  # store.set_usage

        assert [d is None for d in decisions] == [d is None for d in expected]
        for w, d in zip(writes, decisions, strict=True):
            if d is None and w.quota is not None:
                truth[w.owner] += len(w.tokens)
        assert all(truth[owner] <= 6 for owner in truth)
        assert all(bound[owner] >= truth[owner] for owner in truth)
    # Some owners were counted, but not every owner of every batch: the bounds spared counts.
    assert 0 < counts < asked
