"""caremesh: event-driven health data integration over Kafka, with consent on every flow."""

__version__ = "0.1.0"
