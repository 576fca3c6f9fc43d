"""Full nodes in one process: groups form, learn, survive their leader, refuse strangers."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import pytest

from mycelium_p2p.errors import ConfigError
from mycelium_p2p.group.invite import issue_invite
from mycelium_p2p.group.transport import RemoteError
from mycelium_p2p.records.leadership import LeaderCert, sign_vote
from mycelium_p2p.testing.aio import run_async, wait_for
from mycelium_p2p.testing.loopback import crash, learning_network
from mycelium_p2p.testing.procs import pid_alive


def leaders(nodes) -> list:
    return [n for n in nodes if n.group is not None and n.group.is_leader]


@run_async(timeout=120)
async def test_four_nodes_form_one_group_and_learn_well_above_chance() -> None:
    configs = [{"data_shard": f"{i}/4"} for i in range(4)]
    async with learning_network(configs) as (_, *nodes):
        assert len({n.group.group_id for n in nodes}) == 1
        (leader,) = leaders(nodes)
        await wait_for(lambda: len(leader.rounds) >= 8, 60, "8 rounds")
        assert leader.rounds[-1].members == 4
        assert leader.rounds[-1].accuracy > 0.6  # chance is 0.1
        rounds = [r.round for r in leader.rounds]
        assert rounds == sorted(set(rounds))
        # every member holds the latest group model (a round behind at most, mid-commit)
        latest = max(n.group.model.round for n in nodes)
        assert all(n.group.model.round >= latest - 1 for n in nodes)


@run_async(timeout=120)
async def test_a_leader_killed_mid_round_is_replaced_and_no_round_is_lost() -> None:
    configs = [{"data_shard": f"{i}/3"} for i in range(3)]
    async with learning_network(configs) as (_, *nodes):
        # a stall at start-up can hand the first leader's term to another: kill whoever led 3
        await wait_for(lambda: any(len(n.rounds) >= 3 for n in leaders(nodes)), 60, "3 rounds")
        (old,) = leaders(nodes)
        # kill it while its own ClientApp is training: mid-round
        await wait_for(lambda: old.runner._lock.locked(), 10, "a round in progress")
        committed = old.group.model.round
        survivors = [n for n in nodes if n is not old]
        before = [len(n.rounds) for n in survivors]  # rounds they led in earlier terms, if any
        await crash(old)
        took = await wait_for(lambda: len(leaders(survivors)) == 1, 10, "a new leader")
        (new,) = leaders(survivors)
        assert new.group.term > 1
        assert took < 5 * 0.3 * 2.5  # within a few lease timeouts
        first = before[survivors.index(new)]
        await wait_for(lambda: len(new.rounds) >= first + 2, 30, "rounds under the new leader")
        assert new.rounds[first].round == committed + 1  # no completed round lost, none repeated
        # A round counts once a majority of the new leader's roster holds it, not every survivor:
        # if the old leader dropped a survivor as silent just before it died, the new leader was
        # elected on a roster without it and commits without it. That survivor is told no round
        # and rejoins after its own candidacy fails (within a second here); the join reply
        # carries the latest model.
        await wait_for(
            lambda: all(
                n.group is not None
                and n.group.leader_key == new.identity.public_key
                and n.group.model.round >= committed + 1
                for n in survivors
            ),
            10,
            "every survivor in the new leader's group with its rounds",
        )


@run_async(timeout=60)
async def test_a_group_of_one_trains() -> None:
    async with learning_network([{"create": "solo"}]) as (_, node):
        await wait_for(lambda: len(node.rounds) >= 3, 30, "3 rounds")
        assert node.rounds[-1].members == 1 and node.group.term == 1


@run_async(timeout=90)
async def test_invite_only_groups_refuse_strangers_and_admit_the_invited() -> None:
    async with learning_network([{"create": "club", "policy": "invite-only"}]) as (seed, owner):
        from mycelium_p2p.identity import Identity
        from mycelium_p2p.node.node import Node, NodeConfig

        def config(**kw) -> NodeConfig:
            return NodeConfig.from_flat(
                bootstrap=[seed.address],
                host="127.0.0.1",
                group="club",
                heartbeat_interval=0.3,
                round_pause=0.05,
                **kw,
            )

        stranger = Node(config())
        try:
            with pytest.raises(ConfigError, match="invite-only"):
                await stranger.start()
            # and the model is never sent to a non-member
            with pytest.raises(RemoteError, match="members only"):
                await stranger.channels.request(
                    owner.tcp_addr,
                    owner.identity.public_key,
                    "g.model",
                    {"gid": owner.group.group_id},
                    timeout=5,
                )
        finally:
            await stranger.stop()

        guest_id = Identity.generate()
        gid, now = owner.group.group_id, __import__("time").time()
        text = issue_invite(owner.identity, gid, guest_id.public_key, now=now, ttl=60)
        wrong = Node(
            config(invite=issue_invite(owner.identity, gid, bytes(32), now=now, ttl=60)),
            identity=Identity.generate(),
        )
        with pytest.raises(ConfigError, match="another node key"):
            await wrong.start()
        await wrong.stop()
        guest = Node(config(invite=text), identity=guest_id)
        try:
            await guest.start()
            assert guest.group.group_id == owner.group.group_id
            await wait_for(lambda: owner.rounds and owner.rounds[-1].members == 2, 30, "2 members")
        finally:
            await guest.stop()


@run_async(timeout=90)
async def test_a_users_own_client_app_from_a_module_path_trains() -> None:
    from tests.helpers import user_app

    app = {"client_app": "tests.helpers.user_app:app"}
    async with learning_network([{**app, "create": "custom"}, {**app}]) as (_, *nodes):
        (leader,) = leaders(nodes)
        await wait_for(lambda: len(leader.rounds) >= 3, 30, "3 rounds")
        assert leader.rounds[-1].members == 2
        assert user_app.calls["train"] > len(leader.rounds) and user_app.calls["evaluate"] > 3
        assert leader.rounds[-1].accuracy > 0.9  # "accuracy" is the user's own metric name


@run_async(timeout=150)
async def test_nodes_can_run_their_client_apps_in_worker_processes() -> None:
    """isolation="process": each node's training runs in a worker of its own, rounds complete,
    a user's ClientApp works there too, and stopping a node stops its worker."""
    from tests.helpers import user_app

    app = {"isolation": "process", "client_app": "tests.helpers.user_app:app"}
    before = dict(user_app.calls)
    configs = [{"create": "iso", "isolation": "process"}, {"group": "iso", "isolation": "process"}]
    async with learning_network(configs) as (_, *nodes):
        (leader,) = leaders(nodes)
        await wait_for(lambda: len(leader.rounds) >= 3, 90, "3 rounds")
        assert leader.rounds[-1].members == 2 and leader.rounds[-1].accuracy > 0.3
        pids = [n.runner.worker.pid for n in nodes]
        assert all(pids) and len(set(pids)) == 2 and os.getpid() not in pids
    for pid in pids:
        assert await wait_for(lambda pid=pid: not pid_alive(pid), 10, f"worker {pid} to exit") >= 0
    async with learning_network([{**app, "create": "own"}, app]) as (_, *nodes):
        (leader,) = leaders(nodes)
        await wait_for(lambda: len(leader.rounds) >= 3, 90, "3 rounds of the user's app")
        assert leader.rounds[-1].accuracy > 0.9  # the user's own metric, computed in the worker
    assert user_app.calls == before  # nothing ran in this process


def test_bad_client_apps_are_one_line_errors() -> None:
    from mycelium_p2p.node.node import Node, NodeConfig

    for spec, message in [
        ("nope", "module:attribute"),
        ("no_such_module_x:app", "cannot import"),
        ("tests.helpers.user_app:missing", "no attribute"),
        ("tests.helpers.user_app:initial_arrays", "not a flwr ClientApp"),
    ]:
        with pytest.raises(ConfigError, match=message):
            Node(NodeConfig.from_flat(client_app=spec))
    with pytest.raises(ConfigError, match="isolation 'vm'"):
        Node(NodeConfig.from_flat(isolation="vm"))


def test_bad_data_is_a_one_line_error(tmp_path) -> None:
    from mycelium_p2p.fl.task import DataError
    from mycelium_p2p.node.node import Node, NodeConfig

    bad = tmp_path / "bad.npz"
    import numpy as np

    np.savez(bad, x=np.zeros((5, 3)), y=np.zeros(4))
    with pytest.raises(DataError, match=r"bad\.npz"):
        Node(NodeConfig.from_flat(data_file=str(bad)))
    with pytest.raises(DataError):
        Node(NodeConfig.from_flat(data_shard="5/4"))


@run_async(timeout=30)
async def test_joining_a_group_that_does_not_exist_names_what_exists() -> None:
    async with learning_network([{"create": "real"}]) as (seed, _):
        from mycelium_p2p.node.node import Node, NodeConfig

        node = Node(
            NodeConfig.from_flat(bootstrap=[seed.address], host="127.0.0.1", group="imaginary")
        )
        with pytest.raises(ConfigError, match="real"):
            await node.start()
        await node.stop()
        await asyncio.sleep(0)


@run_async(timeout=60)
async def test_a_node_with_a_data_dir_keeps_its_votes_on_disk(tmp_path) -> None:
    from mycelium_p2p.group.votes import VoteJournal

    configs = [{"create": "club", "data_dir": str(tmp_path / "a")}]
    configs += [{"group": "club", "data_dir": str(tmp_path / "b")}]
    async with learning_network(configs) as (_, leader, member):
        await wait_for(lambda: leader.group.model.round >= 1, 30, "a round")
        await crash(leader)
        await wait_for(lambda: member.group.is_leader, 30, "the member elected")
        journal = VoteJournal(tmp_path / "b" / "groups" / f"{member.group.group_id}.votes")
        assert journal.load() == {2: member.identity.public_key}  # its vote for itself


@run_async(timeout=60)
async def test_a_group_that_refuses_for_now_is_asked_again_and_a_full_one_is_not() -> None:
    stay = {"migrate": False, "merge": False}  # solo stays solo: not moved into club
    configs = [{"create": "club", **stay}, {"create": "solo", "capacity": 1, **stay}]
    async with learning_network(configs) as (seed, owner, _):
        from mycelium_p2p.node.node import Node, NodeConfig

        def node(group: str) -> Node:
            config = NodeConfig.from_flat(
                bootstrap=[seed.address], host="127.0.0.1", group=group, heartbeat_interval=0.3
            )
            return Node(config)

        confirm = owner.group.upkeep.confirm_quorum
        asked = 0

        async def regrouping_twice() -> bool:  # "group club is regrouping; try later", twice
            nonlocal asked
            asked += 1
            return asked > 2 and await confirm()

        owner.group.upkeep.confirm_quorum = regrouping_twice
        patient = node("club")
        try:
            await patient.start()
            assert patient.group.group_id == owner.group.group_id and asked >= 3
        finally:
            await patient.stop()
        crowded = node("solo")
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            with pytest.raises(ConfigError, match="full"):
                await crowded.start()
            assert loop.time() - started < 10  # at once: waiting does not empty a group
        finally:
            await crowded.stop()


@run_async(timeout=90)
async def test_a_node_that_joined_just_before_the_leader_died_finds_the_new_leader() -> None:
    configs = [{"data_shard": "0/3"}, {"data_shard": "1/3"}]
    async with learning_network(configs) as (seed, *nodes):
        from mycelium_p2p.node.node import Node, NodeConfig

        (old,) = leaders(nodes)
        await wait_for(lambda: len(old.rounds) >= 2, 30, "2 rounds")
        late = Node(
            NodeConfig.from_flat(
                bootstrap=[seed.address],
                host="127.0.0.1",
                data_shard="2/3",
                heartbeat_interval=0.3,
                round_pause=0.05,
            )
        )
        await late.start()  # the other member has not heard of it yet
        await crash(old)
        try:
            survivors = [n for n in nodes if n is not old]
            await wait_for(lambda: len(leaders([*survivors, late])) == 1, 15, "a new leader")
            (new,) = leaders([*survivors, late])
            await wait_for(
                lambda: (
                    len(new.group.roster) == 2 and late.group.leader_key == new.identity.public_key
                ),
                15,
                "the late node in the new roster",
            )
        finally:
            await late.stop()


@run_async(timeout=120)
async def test_a_leader_that_loses_its_majority_commits_nothing_steps_down_and_regroups() -> None:
    configs = [{"data_shard": f"{i}/3", "stall_timeout": 6.0} for i in range(3)]
    async with learning_network(configs) as (_, *nodes):
        await wait_for(lambda: len(leaders(nodes)) == 1, 30, "one group with one leader")
        (leader,) = leaders(nodes)
        group = leader.group
        await wait_for(lambda: len(leader.rounds) >= 2, 60, "2 rounds")
        for node in nodes:
            if node is not leader:
                await crash(node)  # two of three gone: what is left is not a majority
        committed = group.model.round
        await wait_for(lambda: not group.is_leader, 10, "the cut-off leader stepping down")
        assert len(group.roster) == 3  # nobody dropped without a majority
        assert group.model.round <= committed + 1  # at most the round already in flight
        # no leader for stall_timeout: it regroups under a new id and keeps its model
        await wait_for(
            lambda: leader.group not in (None, group) and leader.group.is_leader,
            30,
            "regrouping into a new group it leads",
        )
        assert leader.group.group_id != group.group_id
        assert leader.group.model.round >= group.model.round
        await wait_for(lambda: leader.rounds and leader.rounds[-1].members == 1, 30, "a round")


@run_async(timeout=120)
async def test_a_leader_drops_a_dead_member_while_the_majority_answers() -> None:
    configs = [{"data_shard": f"{i}/3"} for i in range(3)]
    async with learning_network(configs) as (_, *nodes):
        (leader,) = leaders(nodes)
        await wait_for(lambda: len(leader.rounds) >= 2, 60, "2 rounds")
        # the majority that answers must know of each other: a member that died before it
        # heard of the last joiner may as well be cut off and electing itself alone
        confirmed = lambda: all(m.confirmed for m in leader.group.roster.values())  # noqa: E731
        await wait_for(confirmed, 10, "the roster confirmed")
        await crash(next(n for n in nodes if n is not leader))
        await wait_for(lambda: len(leader.group.roster) == 2, 10, "the dead member dropped")
        done = len(leader.rounds)
        await wait_for(lambda: len(leader.rounds) >= done + 2, 30, "rounds with two")
        assert leader.group.is_leader and leader.rounds[-1].members == 2


@run_async(timeout=120)
async def test_a_member_silent_mid_round_does_not_hold_the_round_for_the_timeout() -> None:
    configs = [{"data_shard": f"{i}/3", "reply_timeout": 60.0} for i in range(3)]
    async with learning_network(configs) as (_, *nodes):
        (leader,) = leaders(nodes)
        await wait_for(lambda: len(leader.rounds) >= 2, 60, "2 rounds")
        frozen = next(n for n in nodes if n is not leader)

        async def never_answers(*_args, **_kwargs):
            await asyncio.sleep(3600)

        # like a cut cable: the connection stays open, nothing comes back, no heartbeats
        frozen.runner.handle = never_answers
        frozen.group.tasks.cancel()
        done = len(leader.rounds)
        # the reply timeout is 60 s; the round goes on once the member is 5 heartbeats silent
        await wait_for(lambda: len(leader.rounds) >= done + 2, 20, "rounds without it")
        assert leader.rounds[-1].members == 2


@run_async(timeout=120)
async def test_a_round_that_raises_does_not_stop_the_group(monkeypatch) -> None:
    from flwr.serverapp.strategy import FedAvg

    from mycelium_p2p.node import leading

    failures = []

    class Flaky(FedAvg):
        def start(self, *args, **kwargs):  # the first two rounds blow up inside the strategy
            if len(failures) < 2:
                failures.append(1)
                raise SystemError("AST constructor recursion depth mismatch")
            return super().start(*args, **kwargs)

    small = {"min_train_nodes": 1, "min_evaluate_nodes": 1, "min_available_nodes": 1}
    monkeypatch.setattr(leading, "make_strategy", lambda name: Flaky(**small))
    async with learning_network([{"create": "flaky"}]) as (_, node):
        await wait_for(lambda: len(node.rounds) >= 2, 60, "rounds after two failures")
        assert len(failures) == 2 and node.group.is_leader


@run_async(timeout=150)
async def test_two_leaders_of_one_group_merge_into_the_one_ahead() -> None:
    configs = [{"data_shard": f"{i}/3"} for i in range(3)]
    async with learning_network(configs) as (_, *nodes):
        (leader,) = leaders(nodes)
        await wait_for(lambda: len(leader.rounds) >= 2, 60, "2 rounds")
        rival, member = (n for n in nodes if n is not leader)
        # fork the group the way a partition does: the leader was cut off, and the two others
        # elected the rival in a newer term (real signed votes) while it still leads
        term, gid = leader.group.term + 1, leader.group.group_id
        candidate = rival.identity.public_key
        votes = [
            (n.identity.public_key, sign_vote(n.identity, gid, term, candidate))
            for n in (rival, member)
        ]
        forked = rival.group
        forked.seat.roster = {
            k: m for k, m in forked.roster.items() if k != leader.identity.public_key
        }
        forked.seat.election.won(term)
        forked.seat.cert = LeaderCert(gid, term, candidate, votes)
        forked.elections.become_leader(term)
        assert len(leaders(nodes)) == 2

        # the leader behind learns of the newer term (its certificate proves it: a majority of
        # the others voted) and follows: one leader, one roster, rounds with everyone
        def merged() -> bool:
            everyone = {n.identity.public_key for n in nodes}
            led_by = {n.group.leader_key for n in nodes if n.group is not None}
            return (
                leaders(nodes) == [rival]
                and set(forked.roster) == everyone
                and led_by == {rival.identity.public_key}
            )

        await wait_for(merged, 60, "the fork merged")
        assert leader.group is not None and member.group is not None
        assert leader.group.group_id == member.group.group_id == forked.group_id
        done = len(rival.rounds)
        await wait_for(lambda: len(rival.rounds) >= done + 2, 60, "rounds after the merge")
        assert rival.rounds[-1].members == 3


@run_async(timeout=120)
async def test_a_raising_client_app_is_visible_and_its_node_leaves(caplog) -> None:
    """A member whose ClientApp raises: it logs the traceback once (then counts), the leader
    names the member and the error it got back, and after ``max_app_failures`` calls in a row
    the member leaves the group with a clear message; the group trains on without it."""
    caplog.set_level(logging.WARNING)
    good = {"client_app": "tests.helpers.user_app:app", "migrate": False}
    bad = {"client_app": "tests.helpers.raising_app:app", "max_app_failures": 4, "migrate": False}
    events: list[Any] = []
    async with learning_network([{**good, "create": "mixed"}, bad]) as (_, leader, buggy):
        buggy.on_event = events.append
        await wait_for(lambda: buggy.ended.is_set(), 60, "the buggy member to give up")
        assert buggy.group is None and buggy.runner.failures.streak >= 4
        assert "ClientApp failed 4 times in a row" in (buggy.gave_up or "")
        assert "shapes (2, 2) and (3,)" in buggy.gave_up
        assert [e.kind for e in events if e.kind == "app-failed"] == ["app-failed"]
        done = len(leader.rounds)
        await wait_for(lambda: len(leader.rounds) >= done + 2, 30, "rounds without it")
        assert leader.rounds[-1].members == 1 and leader.group.is_leader
    member_logs = [r for r in caplog.records if r.name == "mycelium_p2p.fl.client"]
    tracebacks = [r for r in member_logs if r.levelno == logging.ERROR]
    assert len(tracebacks) == 1, [r.getMessage() for r in member_logs]
    assert "Traceback" in tracebacks[0].getMessage() and "raising_app.py" in (
        tracebacks[0].getMessage()
    )
    key = buggy.identity.public_key.hex()[:8]
    reports = [r.getMessage() for r in caplog.records if r.name == "mycelium_p2p.fl.grid"]
    assert any(key in m and "shapes (2, 2)" in m and "Traceback" not in m for m in reports)
