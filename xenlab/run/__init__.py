"""A run: the farm file, the pytest plugin, run records, known issues, the health gate, the runner.

Fourth stage of the pipeline: it drives the lab and writes what happened.
Modules: `farmfile` (the one reader of the farm file), `record` (RunRecord,
the one API for run.json; `recordschema` checks it on read), `junit` (junit.xml and `results show`), `plugin`
(pytest), `teardown` (a run ended, interrupted or not), `known_issues`, `health`, `runner` (many targets at once),
`compare` (one night against the last).
"""
