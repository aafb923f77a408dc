"""Adapters: the Faust worker, Kafka admin, publishing and metrics."""
