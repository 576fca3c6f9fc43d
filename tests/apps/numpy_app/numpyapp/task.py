"""numpyapp: softmax regression on scikit-learn's 8x8 digits, in numpy."""

import numpy as np
from sklearn.datasets import load_digits

NUM_FEATURES = 64
NUM_CLASSES = 10


def get_weights() -> list[np.ndarray]:
    return [np.zeros((NUM_FEATURES, NUM_CLASSES)), np.zeros(NUM_CLASSES)]


def load_data(partition_id: int, num_partitions: int):
    """This partition's train and test split (the last 297 images are the test set)."""
    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    x_train, y_train, x_test, y_test = x[:1500], y[:1500], x[1500:], y[1500:]
    part = np.arange(len(x_train)) % num_partitions == partition_id
    test = np.arange(len(x_test)) % num_partitions == partition_id
    return x_train[part], y_train[part], x_test[test], y_test[test]


def load_centralized():
    x, y = load_digits(return_X_y=True)
    return x[1500:] / 16.0, y[1500:]


def _probs(weights: list[np.ndarray], x: np.ndarray) -> np.ndarray:
    logits = x @ weights[0] + weights[1]
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def train(weights, x, y, epochs: int, lr: float) -> float:
    onehot = np.eye(NUM_CLASSES)[y]
    for _ in range(epochs):
        p = _probs(weights, x)
        grad = (p - onehot) / len(x)
        weights[0] -= lr * x.T @ grad
        weights[1] -= lr * grad.sum(axis=0)
    return test(weights, x, y)[0]


def test(weights, x, y) -> tuple[float, float]:
    p = _probs(weights, x)
    loss = float(-np.log(p[np.arange(len(y)), y] + 1e-12).mean())
    return loss, float((p.argmax(axis=1) == y).mean())
