"""Places that free themselves: a lease that a run renews, and a janitor that ends it.

labgrid keeps a place acquired until its holder releases it; a client killed with
SIGKILL never does, and the place stays locked until someone releases it by hand
(labgrid issue #1739). A xenlab run therefore renews a lease on every place it holds,
the place tag `xenlab_lease=<epoch second it lapses>`, every RENEW_S seconds; the
janitor (`xenlab lab janitor`, started by `xenlab lab up`) releases a place whose
lease lapsed. A killed run's place is free again within LAPSE_S + the janitor's
interval. A place acquired without a lease (by hand, by another tool) is never
touched.
"""

from __future__ import annotations

import re
import sys
import threading
import time

from .places import FarmError, client

LEASE_TAG = "xenlab_lease"
RENEW_S = 10.0
LAPSE_S = 40  # four renewals missed: the run is gone, not slow
JANITOR_INTERVAL_S = 5.0


def set_lease(coordinator: str, place: str, until: int | None) -> bool:
    """Set (or, with None, clear) the place's lease tag; False when the coordinator did not take it."""
    try:
        proc = client(coordinator, "-p", place, "set-tags",
                      f"{LEASE_TAG}={'' if until is None else int(until)}", timeout=20)
    except FarmError:
        return False
    return proc.returncode == 0


class LeaseRenewer:
    """Renews a held place's lease until stopped; the lease lapses if the process dies."""

    def __init__(self, coordinator: str, place: str):
        self.coordinator, self.place = coordinator, place
        self._stop = threading.Event()
        set_lease(coordinator, place, time.time() + LAPSE_S)
        self._thread = threading.Thread(target=self._run, name=f"lease-{place}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(RENEW_S):
            set_lease(self.coordinator, self.place, time.time() + LAPSE_S)

    def stop(self) -> None:
        """Stop renewing and clear the lease (the place is being released)."""
        self._stop.set()
        self._thread.join(timeout=30)
        set_lease(self.coordinator, self.place, None)


_PLACE = re.compile(r"^Place '([^']+)':$")


def held_places(coordinator: str) -> dict[str, tuple[str | None, dict[str, str]]]:
    """place -> (who holds it or None, its tags), from `labgrid-client -v places`."""
    proc = client(coordinator, "-v", "places")
    if proc.returncode != 0:
        raise FarmError("coordinator", "coordinator-unreachable",
                        f"coordinator {coordinator}: {proc.stderr.strip() or proc.returncode}")
    out: dict[str, tuple[str | None, dict[str, str]]] = {}
    name = None
    for line in proc.stdout.splitlines():
        m = _PLACE.match(line)
        if m:
            name = m.group(1)
            out[name] = (None, {})
        elif name is not None and line.startswith("  tags: "):
            tags = dict(t.split("=", 1) for t in line[8:].split(", ") if "=" in t)
            out[name] = (out[name][0], tags)
        elif name is not None and line.startswith("  acquired: "):
            holder = line[12:].strip()
            out[name] = (None if holder == "None" else holder, out[name][1])
    return out


def sweep(coordinator: str, now: float | None = None, log=print) -> list[str]:
    """Release every acquired place whose lease lapsed; the places released."""
    now = time.time() if now is None else now
    freed = []
    for place, (holder, tags) in held_places(coordinator).items():
        lease = tags.get(LEASE_TAG, "")
        if holder is None or not lease.isdigit() or int(lease) > now:
            continue
        proc = client(coordinator, "-p", place, "release", "--kick", timeout=20)
        if proc.returncode == 0:
            freed.append(place)
            log(f"janitor: released place {place} held by {holder}: its xenlab lease lapsed "
                f"{now - int(lease):.0f} s ago")
            set_lease(coordinator, place, None)
    return freed


def run_janitor(coordinator: str, interval: float = JANITOR_INTERVAL_S) -> None:
    """Sweep for ever; a coordinator that does not answer is tried again next time."""
    print(f"janitor: watching {coordinator} every {interval:.0f} s", flush=True)
    while True:
        try:
            sweep(coordinator, log=lambda line: print(line, flush=True))
        except FarmError as exc:
            print(f"janitor: {exc}", file=sys.stderr, flush=True)
        time.sleep(interval)
