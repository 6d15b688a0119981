"""RunMemo keeps exactly the last compile's entries; the policy compiler stays bounded."""

from __future__ import annotations

import threading
from dataclasses import replace

from flows import policy, policy_conj
from flows.memo import RunMemo
from flows.policy import flows_for_policies
from flows.policy_model import LabelSelector, Peer, PodMeta, Policy, PortSpec, Rule
from tests.unit.flows.test_policy_harness import NODE_A, view


def counting() -> tuple[RunMemo[int, str], list[int]]:
    calls: list[int] = []

    def compute(key: int) -> str:
        calls.append(key)
        return f"v{key}"

    return RunMemo(compute), calls


def test_entries_used_by_consecutive_runs_are_computed_once() -> None:
    memo, calls = counting()
    for _ in range(3):
        with memo.run():
            assert [memo.get(k) for k in (1, 2, 1)] == ["v1", "v2", "v1"]
    assert calls == [1, 2]


def test_a_run_forgets_what_it_did_not_use() -> None:
    memo, calls = counting()
    with memo.run():
        memo.get(1), memo.get(2)
    with memo.run():
        memo.get(2)
    assert len(memo) == 1
    with memo.run():
        memo.get(1)
    assert calls == [1, 2, 1]


def test_stays_bounded_under_churn() -> None:
    memo, _ = counting()
    for run in range(500):
        with memo.run():
            for k in range(run, run + 10):  # each run: 9 old keys, 1 new
                memo.get(k)
        assert len(memo) == 10


def test_outside_a_run_nothing_is_stored_and_nested_runs_are_one() -> None:
    memo, calls = counting()
    memo.get(1), memo.get(1)
    assert calls == [1, 1] and len(memo) == 0
    with memo.run():
        memo.get(1)
        with memo.run():
            memo.get(2)
        assert len(memo) == 2  # the inner run's end is not the end of the run
    assert len(memo) == 2
    memo.cache_clear()
    assert len(memo) == 0


def test_concurrent_runs_keep_their_union() -> None:
    memo, _ = counting()
    inside, release = threading.Event(), threading.Event()

    def other() -> None:
        with memo.run():
            memo.get(7)
            inside.set()
            release.wait(5)

    thread = threading.Thread(target=other)
    thread.start()
    inside.wait(5)
    with memo.run():
        memo.get(8)
    release.set()
    thread.join(5)
    assert len(memo) == 2  # 7 and 8 were both used by the last (merged) run


def churn_cluster(n: int = 60) -> tuple[list[PodMeta], list[Policy]]:
    local = [PodMeta("prod", f"db-{i}", {"app": "db"}, (f"10.244.1.{2 + i}",), 32768 + i)
             for i in range(4)]  # fmt: skip
    peers = [PodMeta("prod", f"web-{i}", {"app": "web", "rev": "0"}, (f"10.244.{100 + i}.3",))
             for i in range(n)]  # fmt: skip
    rule = Rule((Peer(LabelSelector({"rev": "0"})),), (PortSpec("TCP", 5432),))
    return local + peers, [Policy("prod", "db", LabelSelector({"app": "db"}), ingress=(rule,))]


def test_policy_compile_memo_follows_the_live_flows_under_label_churn() -> None:
    pods, policies = churn_cluster()
    before = flows_for_policies(policies, view(pods, NODE_A), [], NODE_A)
    again = flows_for_policies(policies, view(pods, NODE_A), [], NODE_A)
    key = "policy/prod/db/ingress/0"
    # a recompute with nothing changed hands back the very same flow objects
    assert {id(f) for f in before[key]} == {id(f) for f in again[key]}
    sizes = set()
    for step in range(40):  # relabel one peer at a time out of and back into the rule
        i = step % len(pods[4:]) + 4
        pods[i] = replace(pods[i], labels={"app": "web", "rev": str(step % 2)})
        flows_for_policies(policies, view(pods, NODE_A), [], NODE_A)
        sizes.add((len(policy_conj._FLOWS), len(policy._PEER_DIMENSIONS)))
    assert sizes == {(1, 1)}  # one rule, one conjunction: only the live one is kept


def test_a_changed_conjunction_reuses_the_flows_of_its_unchanged_clauses() -> None:
    pods, policies = churn_cluster()
    key = "policy/prod/db/ingress/0"
    before = flows_for_policies(policies, view(pods, NODE_A), [], NODE_A)[key]
    pods[10] = replace(pods[10], labels={"app": "web", "rev": "1"})  # one peer leaves the rule
    after = flows_for_policies(policies, view(pods, NODE_A), [], NODE_A)[key]
    assert len(before - after) == 1 and not after - before
    assert {id(f) for f in after} < {id(f) for f in before}  # the same objects, not equal copies
