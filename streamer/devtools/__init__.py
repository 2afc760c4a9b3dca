"""Developer tools: the local single-node Kafka + Redis, dataset replay into a topic, and the
end-to-end demo. Their run-time files (the broker's Maven pom and configuration, the demo's
data slice) ship inside this package."""
