"""Reports made from run records: the Test Day table, the nightly summary, the dashboard.

The last stage: reports read records (`xenlab.run.record`, `xenlab.run.compare`)
and never import the runner or the lab.
"""
