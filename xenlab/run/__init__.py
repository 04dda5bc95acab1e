"""A run: the farm file, the pytest plugin, run records, known issues, the health gate, the runner.

Fourth stage of the pipeline: it drives the lab and writes what happened.
Modules: `farmfile` (the one reader of the farm file), `record` (RunRecord,
the one API for run.json), `junit` (junit.xml and `results show`), `plugin`
(pytest), `known_issues`, `health`, `runner` (many targets at once),
`compare` (one night against the last).
"""
