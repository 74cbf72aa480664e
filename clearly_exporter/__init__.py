"""clearly-exporter: real-time Celery monitoring as Prometheus metrics and OTLP traces."""

__version__ = "0.1.0"
