"""The build: plain Python, or with ``CLEARLY_EXPORTER_COMPILE=1`` the engine compiled by mypyc.

The engine runs for every event and is most of a backlog drain's time; compiled, the
drain is 1.3-1.5x as fast (bench/README.md). It needs a C compiler and Python's headers,
so it is asked for, never assumed: a build without it is the same package, only slower.
Everything else about the package is in pyproject.toml.
"""

import os

from setuptools import setup

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
    setup(ext_modules=mypycify(ENGINE, opt_level="3"))
else:
    setup()
