#!/usr/bin/env bash
# The engine compiled by mypyc, as CLEARLY_EXPORTER_COMPILE=1 (and the Docker image)
# builds it, under every test that runs the engine in process: compiled, it must behave
# as it does uncompiled. The README's test command runs it after the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
CLEARLY_EXPORTER_COMPILE=1 pip install --quiet --no-deps --target "$build" .
cp -r tests pyproject.toml "$build"/
cd "$build"
# From here, with the build first on the path; tests/engine/test_build.py fails if the
# plain modules were imported instead.
CLEARLY_EXPORTER_COMPILE=1 python -m pytest -p no:cacheprovider \
  tests/engine tests/metrics tests/api tests/traces tests/test_source.py
