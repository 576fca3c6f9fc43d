"""A ClientApp with a bug: every call raises. ``--client-app tests.helpers.raising_app:app``."""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from tests.helpers.user_app import initial_arrays  # noqa: F401  (the start model it would use)

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    raise ValueError("the user's bug: shapes (2, 2) and (3,) do not align")


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    raise ValueError("the user's bug: shapes (2, 2) and (3,) do not align")
