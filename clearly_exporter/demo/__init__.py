"""A self-contained demo: a real Celery app, workers, a traffic producer and the exporter."""
