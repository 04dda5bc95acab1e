"""The boot plan: board profiles, the host DTB, where every file goes and what /chosen says.

Second stage of the pipeline: it reads image sets and imports nothing from
the lab.  Modules: `profile` (boards/*.yaml), `dtb` (resolve and read the
host DTB), `chosen` (the /chosen edits), `bootplan` (addresses and their
renderings), `prepare` (profile + image set -> plan), `stage` (the plan's
files under their load names in one directory), `doctor` (preflight).
"""
