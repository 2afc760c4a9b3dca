"""The stream evaluation behind ``ama-stream eval --suites streams``: labelled public streams
replayed in time order through the detectors and the worker's verdict path (per-key
thresholds and the alert state machine in Redis), judged by what an on-call engineer sees
(docs/stream-eval.md).
"""
