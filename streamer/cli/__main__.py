"""``python -m streamer.cli``: the same as the ``ama-stream`` console script."""

from streamer.cli import main

main()
