"""Migration: measure candidate groups' models on local data, move when it clearly pays."""
