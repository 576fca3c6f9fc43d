"""A ClientApp for the worker-process tests: it reports where it ran and remembers calls.

``train`` counts its calls in Flower's ``context.state`` and reports the count, its pid and
the order the process served train calls in;
``evaluate`` raises, or sleeps, when the message's config asks it to.
"""

from __future__ import annotations

import itertools
import os
import time

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()
_served = itertools.count()  # the order this process ran train calls in


@app.train()
def train(msg: Message, context: Context) -> Message:
    seen = context.state.get("seen", ConfigRecord({"calls": 0}))
    seen["calls"] = int(seen["calls"]) + 1
    context.state["seen"] = seen
    arrays = msg.content["arrays"]
    metrics = MetricRecord(
        {
            "calls": seen["calls"],
            "pid": os.getpid(),
            "node": context.node_id % 1000,
            "served": next(_served),
        }
    )
    return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    config = msg.content["config"]
    if config.get("raise"):
        raise ValueError("asked to fail")
    time.sleep(float(config.get("sleep", 0.0)))
    return Message(RecordDict({"metrics": MetricRecord({"pid": os.getpid()})}), reply_to=msg)
