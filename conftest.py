"""Repository-wide pytest settings. xenlab's own plugin (the `board` fixture,
run records) is loaded from the installed package's `pytest11` entry point, so
the same `pytest --lg-env farm.yaml testcases/` works outside this checkout."""

collect_ignore = ["build", "results", "hypervisor", "bench"]
