"""The pure core: events, journey state, deadlines, facts, decisions' inputs.

Nothing here imports Kafka, Faust, durable-rules or Prometheus, and nothing reads
the wall clock: every function that needs "now" takes it as ``now_ms``.
"""
