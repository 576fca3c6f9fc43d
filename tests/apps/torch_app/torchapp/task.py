"""torchapp: a small MLP on scikit-learn's 8x8 digits."""

import torch
from sklearn.datasets import load_digits
from torch import nn


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def load_data(partition_id: int, num_partitions: int):
    """This partition's train and test tensors (the last 297 images are the test set)."""
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.long)
    train_idx = torch.arange(1500)[torch.arange(1500) % num_partitions == partition_id]
    test_idx = 1500 + torch.arange(297)[torch.arange(297) % num_partitions == partition_id]
    return x[train_idx], y[train_idx], x[test_idx], y[test_idx]


def load_centralized():
    x, y = load_digits(return_X_y=True)
    return torch.tensor(x[1500:] / 16.0, dtype=torch.float32), torch.tensor(y[1500:])


def train(net: Net, x, y, epochs: int, lr: float) -> float:
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    net.train()
    loss = torch.tensor(0.0)
    for _ in range(epochs):
        for start in range(0, len(x), 32):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(net(x[start : start + 32]), y[start : start + 32])
            loss.backward()
            optimizer.step()
    return float(loss.detach())


def test(net: Net, x, y) -> tuple[float, float]:
    net.eval()
    with torch.no_grad():
        logits = net(x)
        loss = float(nn.functional.cross_entropy(logits, y))
        accuracy = float((logits.argmax(dim=1) == y).float().mean())
    return loss, accuracy
