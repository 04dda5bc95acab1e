"""`xenlab lab up|down`: a lab of several hosts on this machine (lab/netlab.py)."""

from __future__ import annotations

from pathlib import Path

from ..lab import janitor, netlab
from ..lab.places import coordinator_address


def cmd_lab(args) -> int:
    lab_dir = Path(args.dir)
    if args.action == "janitor":
        janitor.run_janitor(coordinator_address(args.coordinator))
        return 0
    if args.action == "down":
        netlab.lab_down(lab_dir)
        return 0
    state = netlab.lab_up(lab_dir, args.hosts)
    for host in state["hosts"]:
        print(f"{host['place']}: {host['name']} ({host['netns']}, {host['addr']}), "
              f"tag board={netlab.BOARD}")
    print(f"export LG_COORDINATOR={state['coordinator']}")
    print(f"farm file: {Path(state['dir']) / 'farm.yaml'}")
    return 0
