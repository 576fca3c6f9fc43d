"""Migration: measure candidate groups' models on local data, move when it clearly pays.

Each name is imported on first use (``from mycelium_p2p.migration import MigrationPolicy``).
"""

from .._lazy import lazy_exports

__all__ = [
    "Decision",
    "MergeConfig",
    "MergePolicy",
    "MigrationConfig",
    "MigrationPolicy",
    "SplitPolicy",
]

__getattr__ = lazy_exports(
    __name__,
    {
        "Decision": ".policy",
        "MergeConfig": ".consolidation",
        "MergePolicy": ".consolidation",
        "MigrationConfig": ".policy",
        "MigrationPolicy": ".policy",
        "SplitPolicy": ".split",
    },
)
