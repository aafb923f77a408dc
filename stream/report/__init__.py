"""Reports over the outcomes topic: what was decided, what converted, and the uplift.

``outcomes`` reads and checks the records (from a JSONL file or the Kafka topic),
``uplift`` turns them into per-group statistics, ``render`` prints them.
"""
