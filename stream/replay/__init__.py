"""Replay: recorded event logs through the workers' core, offline and deterministic."""
