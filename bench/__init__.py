"""`ama-stream bench`: throughput and latency of the worker against the raw Kafka ceiling and
River, on the same generated messages, in one run (docs/BENCHMARKS.md).

Modules: ``data`` (the messages and models), ``loops`` (what runs in each measured process),
``measure`` (progress from committed offsets, CPU and RSS from /proc), ``latency`` (paced
end-to-end latency), ``report`` (table, JSON, the markdown doc), ``run`` (the whole sequence).
"""
