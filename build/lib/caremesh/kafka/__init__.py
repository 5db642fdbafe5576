"""The one wrapper over confluent-kafka: configuration, producing, reading, retries, the broker."""
