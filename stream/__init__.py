"""goldenflow: real-time interventions for e-commerce checkout funnels on Kafka."""

__version__ = "0.1.0"
