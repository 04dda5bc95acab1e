"""xenlab: hardware-in-the-loop smoke tests for Xen on ARM boards, on labgrid.

The pipeline, one folder per stage, each importing only from those before it:
image set (images/) + board profile (plan/) -> boot plan (plan/)
-> lab: strategy, console (lab/) -> run record (run/) -> reports (reports/).
`errors`, `schema` and `console_text` sit below them all; `cli` above.
"""

__version__ = "0.1.0"
