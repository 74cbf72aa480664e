"""clearly's interactive side on the exporter: the JSON query API and its live stream."""
