"""One table of strategies: every name makes a stock Flower strategy a group of one can run,
and the CLI offers exactly those names."""

from __future__ import annotations

import click
import pytest

from mycelium_p2p.cli.join import join
from mycelium_p2p.errors import ConfigError
from mycelium_p2p.fl.strategies import STRATEGIES, make_strategy
from mycelium_p2p.node.config import NodeConfig


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_runs_in_a_group_of_one(name: str) -> None:
    strategy = make_strategy(name.upper())
    assert type(strategy).__name__ == STRATEGIES[name][0]
    assert strategy.min_train_nodes == strategy.min_available_nodes == 1


def test_an_unknown_strategy_names_the_choices() -> None:
    with pytest.raises(ConfigError, match="fedavg, fedprox"):
        make_strategy("fedsgd")


def test_the_cli_offers_the_table_and_its_default_is_in_it() -> None:
    option = next(p for p in join.params if p.name == "strategy")
    assert isinstance(option.type, click.Choice)
    assert list(option.type.choices) == list(STRATEGIES)
    assert NodeConfig.strategy in STRATEGIES
