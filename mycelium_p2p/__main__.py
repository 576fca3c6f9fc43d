"""``python -m mycelium_p2p`` is the ``mycelium-p2p`` command."""

from .cli import main

main()
