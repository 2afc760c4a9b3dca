"""The worker's hot path: consume a micro-batch, run the pure pipeline core on it, produce the
outputs, commit the input offsets once every output is acknowledged (docs/worker.md)."""
