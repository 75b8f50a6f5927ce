"""The cascade exchange node: bridges a level's Kafka cluster with its parent's."""

__version__ = "0.1.0"
