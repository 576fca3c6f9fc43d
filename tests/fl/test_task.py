"""The default learning task: data splits, domain shifts, user files, training and the ClientApp."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from mycelium_p2p.fl import task
from mycelium_p2p.fl.task import (
    MLP,
    DataError,
    Dataset,
    evaluate,
    initial_arrays,
    load_array_file,
    load_arrays,
    load_digits_task,
    make_client_app,
    model_arrays,
    parse_shard,
    permute_labels,
    rotate,
    train_local,
)


def all_samples(data: Dataset) -> np.ndarray:
    """Train and test rows with their label appended, in a canonical order."""
    rows = np.concatenate(
        [
            np.column_stack([data.x_train, data.y_train]),
            np.column_stack([data.x_test, data.y_test]),
        ]
    )
    return rows[np.lexsort(rows.T[::-1])]


# --- shards and domain shifts ---


@pytest.mark.parametrize(
    ("text", "want"), [("0/1", (0, 1)), (" 3 / 4 ", (3, 4)), ("9/10", (9, 10))]
)
def test_parse_shard(text: str, want: tuple[int, int]) -> None:
    assert parse_shard(text) == want


@pytest.mark.parametrize("text", ["", "1", "a/b", "4/4", "-1/4", "1/0", "1/2/3", "1.0/2", "١/٢"])
def test_parse_shard_rejects(text: str) -> None:
    with pytest.raises(DataError, match="data shard"):
        parse_shard(text)


def test_rotate_is_exact() -> None:
    images = np.random.default_rng(0).random((5, 64), dtype=np.float32)
    grids = images.reshape(5, 8, 8)
    assert np.array_equal(rotate(images, 0), images)
    assert np.array_equal(rotate(images, 4), images)
    assert np.array_equal(rotate(images, 1), np.rot90(grids, axes=(1, 2)).reshape(5, 64))
    assert np.array_equal(rotate(images, 2), np.rot90(grids, 2, axes=(1, 2)).reshape(5, 64))
    assert np.array_equal(rotate(rotate(images, 1), 3), images)


def test_permute_labels() -> None:
    y = np.arange(10)
    assert np.array_equal(permute_labels(y, 0), y)
    perms = [permute_labels(y, domain) for domain in range(1, 6)]
    for perm in perms:
        assert sorted(perm) == list(range(10))
        assert not np.array_equal(perm, y)
    assert len({tuple(p) for p in perms}) == len(perms)
    assert np.array_equal(permute_labels(y, 3), permute_labels(y, 3))
    with pytest.raises(ValueError):
        permute_labels(y, -1)


def test_shards_are_disjoint_cover_and_stratified() -> None:
    whole = load_digits_task((0, 1))
    shards = [load_digits_task((i, 4)) for i in range(4)]
    assert sum(len(s.y_train) + len(s.y_test) for s in shards) == 1797
    merged = all_samples(
        Dataset(
            np.concatenate([s.x_train for s in shards]),
            np.concatenate([s.y_train for s in shards]),
            np.concatenate([s.x_test for s in shards]),
            np.concatenate([s.y_test for s in shards]),
            10,
        )
    )
    assert np.array_equal(merged, all_samples(whole))
    for shard in shards:
        assert len(np.unique(shard.y_train)) == 10
        assert len(np.unique(shard.y_test)) >= 9
        assert len(shard.y_test) == pytest.approx(
            0.25 * (len(shard.y_train) + len(shard.y_test)), abs=1
        )


def test_digits_shapes_and_scale() -> None:
    data = load_digits_task((0, 1))
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    assert data.x_train.shape == (1348, 64) and data.x_test.shape == (449, 64)
    assert data.num_features == 64 and data.num_classes == 10
    assert data.x_train.min() >= 0.0 and data.x_train.max() == 1.0


def test_digits_are_deterministic() -> None:
    a, b = load_digits_task((1, 3), seed=7), load_digits_task((1, 3), seed=7)
    for field in ("x_train", "y_train", "x_test", "y_test"):
        assert np.array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.y_train, load_digits_task((1, 3), seed=8).y_train)


def test_domain_shifts_apply_to_the_same_samples() -> None:
    plain = load_digits_task((0, 2))
    rotated = load_digits_task((0, 2), domain=1)
    assert np.array_equal(rotated.x_train, rotate(plain.x_train, 1))
    assert np.array_equal(rotated.y_train, plain.y_train)
    relabelled = load_digits_task((0, 2), domain=2, shift="labels")
    assert np.array_equal(relabelled.x_test, plain.x_test)
    assert np.array_equal(relabelled.y_test, permute_labels(plain.y_test, 2))


def test_digits_rejects_bad_settings() -> None:
    with pytest.raises(DataError, match="shift"):
        load_digits_task(shift="flip")
    with pytest.raises(DataError, match="4/4"):
        load_digits_task((4, 4))
    with pytest.raises(DataError, match="only"):
        load_digits_task((1500, 2000))


# --- user files ---


def test_npz_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "mine.npz"
    np.savez(path, x=rng.random((30, 4, 4)), y=np.arange(30) % 3)
    data = load_array_file(path)
    assert data.num_features == 16 and data.num_classes == 3
    assert len(data.y_train) + len(data.y_test) == 30 and len(data.y_test) in (7, 8)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    assert set(data.y_test) == {0, 1, 2}


@pytest.mark.parametrize("header", ["", "a,b,label\n"])
def test_csv_file(tmp_path: Path, header: str) -> None:
    path = tmp_path / "mine.csv"
    rows = "".join(f"{i * 0.5},{-i},{i % 2}\n" for i in range(10))
    path.write_text(header + rows + "\n")
    data = load_array_file(path, test_fraction=0.2)
    assert data.num_features == 2 and data.num_classes == 2
    assert len(data.y_train) == 8 and len(data.y_test) == 2
    assert sorted(all_samples(data)[:, 1]) == [-i for i in range(9, -1, -1)]


def test_single_class_file_still_has_two_classes(tmp_path: Path) -> None:
    path = tmp_path / "one.npz"
    np.savez(path, x=np.ones((4, 2)), y=np.zeros(4, dtype=int))
    assert load_array_file(path).num_classes == 2


def _npz(**arrays: object):
    return lambda path: np.savez(path, **arrays)


def _text(text: str):
    return lambda path: path.write_text(text)


BAD_FILES = {
    "unknown extension": ("d.txt", _text("1,2,0\n"), "unknown file type"),
    "no x": ("d.npz", _npz(y=np.zeros(3)), "'x'"),
    "no y": ("d.npz", _npz(x=np.zeros((3, 2))), "'y'"),
    "x 1-D": ("d.npz", _npz(x=np.zeros(3), y=np.zeros(3, int)), "shape"),
    "x 4-D": ("d.npz", _npz(x=np.zeros((3, 2, 2, 2)), y=np.zeros(3, int)), "shape"),
    "y 2-D": ("d.npz", _npz(x=np.zeros((3, 2)), y=np.zeros((3, 1), int)), "shape"),
    "lengths": ("d.npz", _npz(x=np.zeros((3, 2)), y=np.zeros(4, int)), "3 samples"),
    "fractional labels": ("d.npz", _npz(x=np.zeros((3, 2)), y=np.array([0, 1.5, 1])), "integer"),
    "string labels": ("d.npz", _npz(x=np.zeros((3, 2)), y=np.array(["a", "b", "c"])), "integer"),
    "negative labels": ("d.npz", _npz(x=np.zeros((3, 2)), y=np.array([0, -1, 1])), ">= 0"),
    "huge label": ("d.npz", _npz(x=np.zeros((3, 2)), y=np.array([0, 1, 10**9])), "limit"),
    "nan features": ("d.npz", _npz(x=np.array([[0, np.nan]] * 3), y=np.zeros(3, int)), "NaN"),
    "inf features": ("d.npz", _npz(x=np.array([[0, 1e300]] * 3), y=np.zeros(3, int)), "infinite"),
    "one sample": ("d.npz", _npz(x=np.zeros((1, 2)), y=np.zeros(1, int)), "at least 2"),
    "not a zip": ("d.npz", _text("hello"), "npz"),
    "csv text cell": ("d.csv", _text("1,2,0\n3,x,1\n"), "numeric"),
    "csv ragged": ("d.csv", _text("1,2,0\n3,1\n"), "numeric"),
    "csv one column": ("d.csv", _text("0\n1\n"), "label column"),
    "csv empty": ("d.csv", _text("a,b,label\n"), "no data"),
    "csv nan label": ("d.csv", _text("1,2,0\n3,4,nan\n"), "integer"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file(tmp_path: Path, case: str) -> None:
    name, write, problem = BAD_FILES[case]
    path = tmp_path / name
    write(path)
    with pytest.raises(DataError, match=problem) as info:
        load_array_file(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.npz"
    with pytest.raises(DataError, match="no such file") as info:
        load_array_file(path)
    assert str(path) in str(info.value)


# --- model and training ---


def fresh_model(data: Dataset, seed: int = 0) -> MLP:
    model = MLP(data.num_features, data.num_classes)
    load_arrays(model, initial_arrays(data.num_features, data.num_classes, seed))
    return model


def test_training_learns_digits() -> None:
    data = load_digits_task((0, 1))
    model = fresh_model(data)
    before, _ = evaluate(model, data.x_test, data.y_test)
    loss = train_local(model, data, epochs=8)
    test_loss, accuracy = evaluate(model, data.x_test, data.y_test)
    assert accuracy > 0.85
    assert test_loss < before and math.isfinite(loss)


def test_training_is_deterministic() -> None:
    data = load_digits_task((2, 4))
    losses, weights = [], []
    for _ in range(2):
        model = fresh_model(data)
        losses.append(train_local(model, data, epochs=2, seed=5))
        weights.append(model_arrays(model).to_numpy_ndarrays())
    assert losses[0] == losses[1]
    assert all(np.array_equal(a, b) for a, b in zip(*weights, strict=True))


def drift(model: MLP, start: list[np.ndarray]) -> float:
    now = model_arrays(model).to_numpy_ndarrays()
    return sum(float(((a - b) ** 2).sum()) for a, b in zip(now, start, strict=True))


def test_fedprox_keeps_weights_near_the_start() -> None:
    data = load_digits_task((1, 4))
    start = initial_arrays().to_numpy_ndarrays()
    free, prox = fresh_model(data), fresh_model(data)
    train_local(free, data, epochs=2)
    loss = train_local(prox, data, epochs=2, proximal_mu=1.0)
    assert math.isfinite(loss)
    assert drift(prox, start) < 0.5 * drift(free, start)


def test_initial_arrays_are_seeded_and_leave_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    a, b, c = initial_arrays(seed=1), initial_arrays(seed=1), initial_arrays(seed=2)
    assert torch.rand(1) == expected
    assert all(
        np.array_equal(x, y)
        for x, y in zip(a.to_numpy_ndarrays(), b.to_numpy_ndarrays(), strict=True)
    )
    assert not np.array_equal(a.to_numpy_ndarrays()[0], c.to_numpy_ndarrays()[0])


def test_model_arrays_are_flowers_and_load_back() -> None:
    model = MLP()
    ours, flowers = model_arrays(model), ArrayRecord(torch_state_dict=model.state_dict())
    assert list(ours.keys()) == list(flowers.keys())
    assert all(ours[k].data == flowers[k].data for k in flowers)
    other = MLP()
    load_arrays(other, flowers)
    pairs = zip(other.parameters(), model.parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)


def test_load_arrays_rejects_a_different_model_and_changes_nothing() -> None:
    model = MLP()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match="shape"):
        load_arrays(model, initial_arrays(num_classes=3, seed=9))  # only the last layer differs
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), before, strict=True))
    wrong = ArrayRecord({"other": initial_arrays()["layers.0.weight"]})
    with pytest.raises(ValueError, match="missing"):
        load_arrays(model, wrong)


def test_evaluate_reports_loss_and_accuracy() -> None:
    data = load_digits_task((0, 4))
    loss, accuracy = evaluate(fresh_model(data), data.x_test, data.y_test)
    assert loss > 0 and 0.0 <= accuracy <= 1.0


# --- the ClientApp ---


@pytest.fixture
def identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flower's process-global task identity, which ``Message()`` reads."""
    for name in ("_run_id", "_node_id", "_task_id"):
        monkeypatch.setattr(TaskIdentity, name, 0)


def context(**node_config: str | int) -> Context:
    return Context(run_id=0, node_id=1, node_config=node_config, state=RecordDict(), run_config={})


def message(kind: str, arrays: ArrayRecord, **config: int | float) -> Message:
    content = RecordDict({"arrays": arrays, "config": ConfigRecord(config)})
    return Message(content=content, dst_node_id=1, message_type=kind)


def test_client_app_trains(identity: None) -> None:
    app = make_client_app()
    sent = initial_arrays()
    ctx = context(**{"data-shard": "1/3", "seed": 0})
    reply = app(message("train", sent, **{"lr": 0.05, "local-epochs": 1, "server-round": 2}), ctx)
    arrays, metrics = reply.content["arrays"], reply.content["metrics"]
    assert {k: a.shape for k, a in arrays.items()} == {k: a.shape for k, a in sent.items()}
    assert not np.array_equal(arrays["layers.0.weight"].numpy(), sent["layers.0.weight"].numpy())
    assert metrics["num-examples"] == len(load_digits_task((1, 3)).y_train)
    assert math.isfinite(metrics["train_loss"])
    assert reply.metadata.message_type == "train"


def test_each_group_round_shuffles_afresh(identity: None) -> None:
    """A leader runs Flower one round at a time (server-round is always 1): the group round it
    sends makes each round's batches differ; the same round trains the same way again."""
    app = make_client_app()
    ctx = context(**{"data-shard": "1/3", "seed": 0})

    def trained(**config: int) -> np.ndarray:
        reply = app(message("train", initial_arrays(seed=4), **config), ctx)
        return reply.content["arrays"]["layers.0.weight"].numpy()

    one = trained(**{"server-round": 1, "group-round": 7})
    assert np.array_equal(one, trained(**{"server-round": 1, "group-round": 7}))
    assert not np.array_equal(one, trained(**{"server-round": 1, "group-round": 8}))


def test_client_app_fedprox_and_no_config(identity: None) -> None:
    app = make_client_app()
    reply = app(message("train", initial_arrays(), **{"proximal-mu": 0.1}), context())
    assert math.isfinite(reply.content["metrics"]["train_loss"])
    bare = Message(
        content=RecordDict({"arrays": initial_arrays()}), dst_node_id=1, message_type="train"
    )
    assert reply.content["arrays"].keys() == app(bare, context()).content["arrays"].keys()


def test_client_app_evaluates(identity: None) -> None:
    app = make_client_app()
    ctx = context(**{"data-shard": "0/2", "domain": 1})
    reply = app(message("evaluate", initial_arrays()), ctx)
    metrics = reply.content["metrics"]
    assert 0.0 <= metrics["eval_acc"] <= 1.0 and metrics["eval_loss"] > 0
    assert metrics["num-examples"] == len(load_digits_task((0, 2), 1).y_test)


def test_client_app_replies_depend_only_on_the_message(identity: None) -> None:
    """The app reuses its model between messages: nothing of an earlier call may leak."""
    ctx = context(**{"data-shard": "1/3", "seed": 0})
    used = make_client_app()
    first = used(message("train", initial_arrays(seed=1), **{"server-round": 1}), ctx)
    kept = {k: a.numpy().copy() for k, a in first.content["arrays"].items()}
    used(message("evaluate", initial_arrays(seed=2)), ctx)
    for kind in ("train", "evaluate"):
        sent = message(kind, initial_arrays(seed=3), **{"server-round": 2})
        again = message(kind, initial_arrays(seed=3), **{"server-round": 2})
        reused, fresh = used(sent, ctx).content, make_client_app()(again, ctx).content
        assert dict(reused["metrics"]) == dict(fresh["metrics"])
        for key, array in fresh.get("arrays", {}).items():
            assert np.array_equal(reused["arrays"][key].numpy(), array.numpy())
    assert all(np.array_equal(first.content["arrays"][k].numpy(), a) for k, a in kept.items())


def test_client_app_reads_a_data_file(identity: None, tmp_path: Path) -> None:
    path = tmp_path / "mine.npz"
    np.savez(path, x=np.random.default_rng(0).random((40, 5)), y=np.arange(40) % 4)
    app = make_client_app()
    reply = app(message("train", initial_arrays(5, 4)), context(**{"data-file": str(path)}))
    assert reply.content["metrics"]["num-examples"] == 30


def test_client_app_caches_data_per_config(identity: None, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = task.load_digits_task

    def counting(*args: object, **kwargs: object) -> Dataset:
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(task, "load_digits_task", counting)
    app = make_client_app()
    for shard in ("0/4", "0/4", "1/4", "0/4"):
        app(message("evaluate", initial_arrays()), context(**{"data-shard": shard}))
    assert calls == [((0, 4), 0), ((1, 4), 0)]


def test_client_app_uses_a_custom_loader(identity: None) -> None:
    rng = np.random.default_rng(0)
    data = Dataset(
        rng.random((20, 3), dtype=np.float32),
        np.arange(20) % 2,
        rng.random((6, 3), dtype=np.float32),
        np.arange(6) % 2,
        2,
    )
    app = make_client_app(lambda ctx: data)
    reply = app(message("evaluate", initial_arrays(3, 2)), context())
    assert reply.content["metrics"]["num-examples"] == 6


def test_train_config_is_read_from_a_config_record_only(
    identity: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A member holds ConfigRecords to its TrainCaps; the same keys in a MetricRecord named
    ``config`` would slip past them, so the task does not read them there."""
    asked: list[dict[str, object]] = []

    def recording(model: torch.nn.Module, data: Dataset, **kwargs: object) -> float:
        asked.append(kwargs)
        return 0.0

    monkeypatch.setattr(task, "train_local", recording)
    app = make_client_app()
    metrics = MetricRecord({"local-epochs": 1_000_000, "lr": 50.0})
    content = RecordDict({"arrays": initial_arrays(), "config": metrics})
    app(Message(content=content, dst_node_id=1, message_type="train"), context())
    app(message("train", initial_arrays(), **{"local-epochs": 3, "lr": 0.5}), context())
    assert [(a["epochs"], a["lr"]) for a in asked] == [(1, 0.05), (3, 0.5)]
