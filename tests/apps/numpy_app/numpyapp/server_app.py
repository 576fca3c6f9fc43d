"""numpyapp: a Flower ServerApp."""

from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from numpyapp.task import get_weights, load_centralized, test

app = ServerApp()

#: (server round, accuracy) of each central evaluation: tests read it
EVALUATIONS: list[tuple[int, float]] = []


def central_evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
    x, y = load_centralized()
    loss, accuracy = test(arrays.to_numpy_ndarrays(), x, y)
    EVALUATIONS.append((server_round, accuracy))
    return MetricRecord({"accuracy": accuracy, "loss": loss})


@app.main()
def main(grid: Grid, context: Context) -> None:
    num_rounds = context.run_config["num-server-rounds"]
    lr = context.run_config["lr"]
    strategy = FedAvg(fraction_train=context.run_config["fraction-train"])
    strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(get_weights()),
        train_config=ConfigRecord({"lr": lr}),
        num_rounds=num_rounds,
        evaluate_fn=central_evaluate,
    )
