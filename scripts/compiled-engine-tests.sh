#!/usr/bin/env bash
# The engine compiled by mypyc, as CLEARLY_EXPORTER_COMPILE=1 (and the Docker image)
# builds it, under the tests that run the engine in process: compiled, it must behave
# as it does uncompiled. The README's test command runs it after the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Built from a copy: a build/ folder or compiled modules left in this tree by an
# earlier build would otherwise be installed as they are.
mkdir "$work/src"
cp -r pyproject.toml setup.py README.md clearly_exporter "$work/src"/
find "$work/src" \( -name '*.so' -o -name __pycache__ \) -prune -exec rm -rf {} +
CLEARLY_EXPORTER_COMPILE=1 pip install --quiet --no-deps --target "$work/build" "$work/src"
cp -r tests pyproject.toml "$work/build"/
cd "$work/build"
# From here, with the build first on the path; tests/engine/test_build.py fails if the
# plain modules were imported instead.
CLEARLY_EXPORTER_COMPILE=1 python -m pytest -p no:cacheprovider \
  tests/engine tests/metrics tests/api tests/traces tests/test_source.py \
  tests/test_server.py tests/test_redistransport.py tests/test_results.py
