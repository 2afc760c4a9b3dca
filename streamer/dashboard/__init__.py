"""``ama-stream dashboard``: a read-only web view of the fleet, its alerts and every key.

It reads the scores and alerts topics (its own consumers, never committing) and Redis (the model
registry and per-key threshold state), keeps bounded downsampled series in memory, and serves
one page with live updates. Modules:

- :mod:`~streamer.dashboard.series`: per-key ring buffers of downsampled scores; heat map, search
- :mod:`~streamer.dashboard.alerts`: firing and resolved episodes, their top features
- :mod:`~streamer.dashboard.fleet`: rates, group lag and owners, DLQ rate, model pointer/history
- :mod:`~streamer.dashboard.ingest`: the topic readers and message parsing
- :mod:`~streamer.dashboard.state`: all of the above behind one lock, as JSON views
- :mod:`~streamer.dashboard.runtime`: the threads, start-up checks, Redis readings per key
- :mod:`~streamer.dashboard.server`: HTTP routes and server-sent events (aiohttp); ``static/``

docs/dashboard.md describes the page, what it keeps and for how long.
"""
