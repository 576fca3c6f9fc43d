"""A test peer that advertises one group (republishing it) until SIGTERM.

python -m tests.helpers.publisher --bootstrap 127.0.0.1:8468 --name g1 [--ttl 30]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from mycelium_p2p.dht import DhtNode
from mycelium_p2p.identity import Identity
from mycelium_p2p.node import run_until_signalled
from mycelium_p2p.records import GroupMetrics, next_seq, sign_advert
from mycelium_p2p.records.charter import GroupCharter
from mycelium_p2p.records.leadership import founding_cert


async def main(args: argparse.Namespace) -> None:
    host, port = args.bootstrap.rsplit(":", 1)
    leader = Identity.generate()
    charter = GroupCharter.found(leader, name=args.name, task="digits", now=time.time())
    cert = founding_cert(leader, charter.group_id)
    seq = 0

    def advert():
        nonlocal seq
        seq = next_seq(seq, time.time())
        return sign_advert(
            leader,
            charter=charter,
            cert=cert,
            address=("127.0.0.1", 9000),
            metrics=GroupMetrics(accuracy=args.accuracy, loss=0.5, round=7, members=2, capacity=10),
            seq=seq,
            now=time.time(),
            ttl=args.ttl,
        )

    async def serve(stop: asyncio.Event) -> None:
        dht = DhtNode()
        await dht.listen(0, "127.0.0.1")
        try:
            await dht.bootstrap([(host, int(port))])
            stored = await dht.put(advert())
            print(f"published {args.name} to {stored} peers", flush=True)
            dht.keep_published(advert, interval=args.ttl / 3)
            await stop.wait()
        finally:
            await dht.close()

    await run_until_signalled(serve)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--ttl", type=float, default=30.0)
    parser.add_argument("--accuracy", type=float, default=0.9)
    asyncio.run(main(parser.parse_args()))
