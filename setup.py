"""The build: plain Python, or with ``CLEARLY_EXPORTER_COMPILE=1`` the engine compiled by
mypyc and the render process's line writer (``metrics/_lines.c``) built.

The engine runs for every event and is most of a backlog drain's time; compiled, the
drain is 1.3-1.5x as fast (bench/README.md). The line writer writes the lines of what
changed on every scrape. Both need a C compiler and Python's headers, so they are asked
for, never assumed: a build without them is the same package, only slower. Everything
else about the package is in pyproject.toml.
"""

import os

from setuptools import Extension, setup

#: The engine's modules: compiled together, each importable as before.
ENGINE = [
    f"clearly_exporter/engine/{name}.py"
    for name in (
        "core",
        "fields",
        "histogram",
        "inference",
        "records",
        "rules",
        "slab",
        "states",
        "task_metrics",
        "workers",
    )
]
#: mypyc comes with mypy; pinned, as the engine must type-check under it to compile.
MYPYC = "mypy==2.4.1"

if os.environ.get("CLEARLY_EXPORTER_COMPILE") == "1":
    try:
        from mypyc.build import mypycify
    except ImportError:
        # pip's first pass, which asks for what the build needs: mypy, then the build.
        setup(setup_requires=[MYPYC])
        raise SystemExit(
            "CLEARLY_EXPORTER_COMPILE=1 needs mypyc: pip install '" + MYPYC + "', "
            "or build with pip's default build isolation"
        ) from None
    lines = Extension(
        "clearly_exporter.metrics._lines",
        ["clearly_exporter/metrics/_lines.c"],
    )
    setup(ext_modules=[*mypycify(ENGINE, opt_level="3"), lines])
else:
    setup()
