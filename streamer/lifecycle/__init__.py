"""The model lifecycle: which bundle the group serves (registry, hot reload), and the retrain
job that makes a new one from recent traffic and publishes it only through the gate
(docs/retrain.md)."""
