"""torchapp: a Flower App in PyTorch, written as Flower's quickstart examples are."""
