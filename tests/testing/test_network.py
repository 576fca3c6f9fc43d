"""``SimNetwork``: latency, loss, partitions and dead peers, all from a seed."""

from __future__ import annotations

import asyncio
import errno
import ipaddress

import pytest

from mycelium_p2p.dht.rtt import Address
from mycelium_p2p.testing import LAN, WAN, PairLatency, SimEndpoint, SimNetwork, run


class Inbox(asyncio.DatagramProtocol):
    """Keeps what arrived: (virtual time, data, sender)."""

    def __init__(self) -> None:
        self.got: list[tuple[float, bytes, Address]] = []

    def datagram_received(self, data: bytes, addr: Address) -> None:  # type: ignore[override]
        self.got.append((asyncio.get_running_loop().time(), data, addr))


async def bind(network: SimNetwork, host: str = "0.0.0.0") -> tuple[SimEndpoint, Inbox]:
    return await network.create_endpoint(Inbox, (host, 0))


def test_endpoints_get_made_up_addresses_and_ports_are_exclusive() -> None:
    async def main() -> None:
        network = SimNetwork()
        (a, _), (b, _) = await bind(network), await bind(network, "127.0.0.1")
        assert a.address[0] != b.address[0]
        for endpoint in (a, b):
            assert ipaddress.ip_address(endpoint.address[0]) in ipaddress.ip_network(
                "198.18.0.0/15"
            )
            assert endpoint.get_extra_info("sockname") == endpoint.address
        with pytest.raises(OSError) as raised:
            await network.create_endpoint(Inbox, a.address)
        assert raised.value.errno == errno.EADDRINUSE
        a.close()
        again, _ = await network.create_endpoint(Inbox, a.address)  # closing frees it
        assert again.address == a.address and network.bound == 2

    run(main())


def test_a_fixed_latency_is_exactly_the_delay() -> None:
    async def main() -> None:
        network = SimNetwork(latency=0.25)
        (a, _), (b, inbox) = await bind(network), await bind(network)
        loop = asyncio.get_running_loop()
        await asyncio.sleep(1.0)
        a.sendto(b"hi", b.address)
        await asyncio.sleep(1.0)
        assert inbox.got == [(1.25, b"hi", a.address)]
        assert loop.time() == 2.0

    run(main())


@pytest.mark.parametrize("model", [LAN, WAN])
def test_pair_latencies_are_stable_per_pair_and_within_the_model(model: PairLatency) -> None:
    async def main() -> None:
        network = SimNetwork(seed=5, latency=model)
        ends = [await bind(network) for _ in range(6)]
        loop = asyncio.get_running_loop()
        delays: dict[tuple[str, str], list[float]] = {}
        for sender, _ in ends:
            for receiver, inbox in ends:
                if sender is receiver:
                    continue
                for _ in range(20):
                    inbox.got.clear()
                    sent = loop.time()
                    sender.sendto(b"x", receiver.address)
                    await asyncio.sleep(1.0)
                    delays.setdefault((sender.address[0], receiver.address[0]), []).append(
                        inbox.got[0][0] - sent
                    )
        low, high = model.rtt_low / 2 * (1 - model.jitter), model.rtt_high / 2 * (1 + model.jitter)
        centres = []
        for pair, seen in delays.items():
            assert all(low <= d <= high for d in seen), (pair, seen)
            centre = sum(seen) / len(seen)
            # one base per pair: every datagram within the jitter of it, both ways alike
            assert max(seen) - min(seen) <= 2.2 * model.jitter * centre
            back = delays[(pair[1], pair[0])]
            assert abs(centre - sum(back) / len(back)) <= 0.1 * centre
            centres.append(centre)
        assert max(centres) - min(centres) > 0.1 * (high - low)  # pairs differ

    run(main())


def test_loss_drops_about_its_share() -> None:
    async def main() -> None:
        network = SimNetwork(seed=1, loss=0.3, latency=0.001)
        (a, _), (b, inbox) = await bind(network), await bind(network)
        for i in range(2000):
            a.sendto(i.to_bytes(2, "big"), b.address)
        await asyncio.sleep(1)
        assert 0.65 * 2000 < len(inbox.got) < 0.75 * 2000
        assert network.stats.lost + network.stats.delivered == 2000

    run(main())


def test_a_partition_cuts_across_islands_until_healed() -> None:
    async def main() -> None:
        network = SimNetwork(latency=0.01)
        (a, ia), (b, ib), (c, ic) = [await bind(network) for _ in range(3)]
        network.partition([a.address, b.address])  # c is left on the other side
        for src, dst in ((a, b), (a, c), (c, a), (b, a)):
            src.sendto(b"p", dst.address)
        await asyncio.sleep(1)
        assert [m[2] for m in ib.got] == [a.address] and [m[2] for m in ia.got] == [b.address]
        assert ic.got == [] and network.stats.cut == 2
        c.sendto(b"in flight", a.address)
        network.heal()
        a.sendto(b"healed", c.address)
        await asyncio.sleep(1)
        assert [m[1] for m in ic.got] == [b"healed"]
        assert [m[1] for m in ia.got][-1] == b"in flight"  # it arrived after the heal

    run(main())


def test_a_killed_endpoint_hears_nothing_and_says_nothing() -> None:
    async def main() -> None:
        network = SimNetwork(latency=0.01)
        (a, ia), (b, ib) = await bind(network), await bind(network)
        a.sendto(b"before", b.address)
        network.kill(b.address)  # also what was on its way
        a.sendto(b"after", b.address)
        b.sendto(b"from the dead", a.address)
        await asyncio.sleep(1)
        assert ia.got == [] and ib.got == []
        assert network.stats.undeliverable == 3 and network.stats.delivered == 0

    run(main())
