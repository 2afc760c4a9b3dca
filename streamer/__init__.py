"""ama-stream's edges: everything that touches Kafka and Redis, one subpackage per concern.

- :mod:`streamer.worker`: the worker's hot path (consume loop, pipeline core, outbox, offsets,
  metrics, assembly from settings).
- :mod:`streamer.state`: per-key thresholds and alert state in Redis (one Lua script per batch).
- :mod:`streamer.lifecycle`: which model the group serves (registry, hot reload) and how a new
  one is made (retrain job, training window, gate, drift).
- :mod:`streamer.dashboard`: the read-only web dashboard over the scores and alerts topics and
  Redis.
- :mod:`streamer.cli`: the ``ama-stream`` command line, one module per command group.
- :mod:`streamer.devtools`: the local Kafka + Redis stack, dataset replay and the demo.

docs/internals.md shows which of them may import which.
"""
