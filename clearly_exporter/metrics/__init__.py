"""Rendering the engine's state for Prometheus, plus broker queue depth at scrape time."""
