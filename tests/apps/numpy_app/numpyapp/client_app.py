"""numpyapp: a Flower ClientApp."""

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from numpyapp.task import load_data, test, train

app = ClientApp()


@app.train()
def train_fn(msg: Message, context: Context):
    weights = msg.content["arrays"].to_numpy_ndarrays()
    x, y, _, _ = load_data(
        context.node_config["partition-id"], context.node_config["num-partitions"]
    )
    loss = train(weights, x, y, context.run_config["local-epochs"], msg.content["config"]["lr"])
    content = RecordDict(
        {
            "arrays": ArrayRecord(weights),
            "metrics": MetricRecord({"train_loss": loss, "num-examples": len(x)}),
        }
    )
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate_fn(msg: Message, context: Context):
    weights = msg.content["arrays"].to_numpy_ndarrays()
    _, _, x, y = load_data(
        context.node_config["partition-id"], context.node_config["num-partitions"]
    )
    loss, accuracy = test(weights, x, y)
    metrics = MetricRecord({"eval_loss": loss, "eval_acc": accuracy, "num-examples": len(x)})
    return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)
