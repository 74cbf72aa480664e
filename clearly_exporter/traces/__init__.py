"""OTLP traces: one span per task attempt, a workflow as one trace.

Building a span (``spans``) is kept apart from shipping spans (``shipper``), as in the
OpenTelemetry SDK; ``sink`` decides when an attempt becomes a span.
"""
