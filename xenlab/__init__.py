"""xenlab: hardware-in-the-loop smoke tests for Xen on ARM boards, on labgrid.

The pipeline, one module per stage:
board profile (boards) + image set (images) -> boot plan (bootplan)
-> strategy (strategy, console) -> run record (results) -> reports.
"""

__version__ = "0.1.0"
