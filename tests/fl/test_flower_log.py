"""A node embedded in a host program prints nothing of Flower's: Flower's records from the
node's threads go to ``mycelium_p2p.fl.flower`` at DEBUG, and the host's logging decides."""

from __future__ import annotations

import logging

from mycelium_p2p.fl.flower_log import FLOWER_LOG
from mycelium_p2p.testing.aio import run_async, wait_for
from mycelium_p2p.testing.loopback import learning_network


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@run_async(timeout=120)
async def test_flowers_round_chatter_reaches_our_logger_at_debug_not_the_console() -> None:
    flower, ours = logging.getLogger("flwr"), logging.getLogger(FLOWER_LOG)
    printed, forwarded = Capture(), Capture()
    levels = flower.level, ours.level
    flower.setLevel(logging.DEBUG)  # as Flower leaves it (other tests quiet it)
    ours.setLevel(logging.DEBUG)
    flower.addHandler(printed)  # next to Flower's own console handler
    ours.addHandler(forwarded)
    try:
        configs = [{"create": "g"}, {"group": "g"}]
        async with learning_network(configs, quiet=False) as (_, leader, _member):
            await wait_for(lambda: leader.group.model.round >= 2, 90, "two rounds")
        flower.info("the host's own use of Flower")  # in our thread: untouched
    finally:
        flower.removeHandler(printed)
        ours.removeHandler(forwarded)
        flower.setLevel(levels[0])
        ours.setLevel(levels[1])
    assert [r.getMessage() for r in printed.records] == ["the host's own use of Flower"]
    rounds = [r for r in forwarded.records if "ROUND" in r.getMessage()]
    assert rounds and all(r.levelno == logging.DEBUG for r in rounds)
