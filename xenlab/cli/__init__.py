"""The `xenlab` command: the one entry point, gluing the pipeline's stages for a user.

images -> plan/doctor -> (lab) -> run: testday, nightly, health, bench -> reports.
`commands` holds what each subcommand does, `parser` its options, and
`arguments` the checks every path option passes before work starts.
"""

from .commands import cmd_testday, target_list  # noqa: F401  (the tests' and the runner's names)
from .parser import build_parser, main  # noqa: F401
