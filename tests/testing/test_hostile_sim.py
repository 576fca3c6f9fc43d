"""Hostile DHT peers on a ``SimNetwork``: made-up contacts name a host nobody listens on."""

from __future__ import annotations

import random

import pytest

from mycelium_p2p.testing import SimNetwork, run
from mycelium_p2p.testing.hostile import (
    HostileCrew,
    HostileDhtNode,
    shared_prefix,
    sim_hostile_peer,
    sybil_identity,
)


def test_a_bogus_sim_peer_names_made_up_contacts_at_a_dead_host_then_its_crew() -> None:
    async def main() -> None:
        network = SimNetwork(seed=1)
        dead = network.new_host()
        crew = HostileCrew(dead_host=dead)
        key = bytes(range(20))
        sybil = sybil_identity(key, 8, seed=1)
        peer = await sim_hostile_peer(network, random.Random(1), "bogus", crew, identity=sybil)
        assert isinstance(peer, HostileDhtNode) and peer.node.id == sybil.node_id
        assert crew.members == [[sybil.node_id, *peer.address]]
        contacts = peer.protocol.contacts_for(key, honest=[])
        made_up, fellows = contacts[:10], contacts[10:]
        assert all(c[1] == dead and network.endpoint((c[1], c[2])) is None for c in made_up)
        assert all(shared_prefix(c[0], key) >= 136 for c in made_up)
        assert fellows == crew.members
        await peer.close()

    run(main())


def test_a_loopback_crew_still_needs_dead_ports() -> None:
    assert HostileCrew([4242]).dead_host == "127.0.0.1"
    with pytest.raises(ValueError):
        HostileCrew([])
