"""``python -m clearly_exporter`` runs the command line."""

from clearly_exporter.cli import main

main()
