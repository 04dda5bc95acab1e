"""The farm file, read once: which targets xenlab runs, their profiles, features and places.

A farm file is a labgrid environment (`pytest --lg-env farm.yaml`).  xenlab's
targets are those with a XenStrategy; each names its board profile (option
`xenlab_board`, or the strategy's `board:`), may list labgrid features, and is
remote when a RemotePlace stands for it.  The pytest plugin, Test Day, the
nightly and the health gate all ask this module, so they agree on what the
farm holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import attr
from labgrid.config import Config
from labgrid.exceptions import InvalidConfigError, NoConfigFoundError

from ..errors import XenlabError
from ..plan.profile import load_profile


@attr.s(frozen=True, auto_attribs=True)
class FarmTarget:
    """A XenStrategy target of the farm."""

    name: str  # the labgrid target; run records live under results/<name>/
    profile: str  # its board profile (boards/<profile>.yaml)
    arch: str | None  # from the profile, when it was loaded
    features: frozenset[str]
    place: str | None  # the RemotePlace's name: behind a coordinator, needs a lock

    @property
    def remote(self) -> bool:
        return self.place is not None


@attr.s(frozen=True, auto_attribs=True)
class Farm:
    path: Path
    config: Config = attr.ib(repr=False)
    targets: dict  # name -> FarmTarget, in file order

    def target(self, name: str) -> FarmTarget:
        if name not in self.targets:
            raise XenlabError(f"no XenStrategy target '{name}' (the farm has: "
                              f"{', '.join(self.targets) or 'none'})", where=str(self.path))
        return self.targets[name]

    def select(self, names: Sequence[str] = ()) -> list[FarmTarget]:
        """The targets named (each checked), or all of them."""
        return [self.target(n) for n in names] if names else list(self.targets.values())


def _named(items) -> dict:
    """labgrid accepts resources/drivers as a mapping or a list of one-key mappings."""
    if isinstance(items, dict):
        return dict(items)
    out = {}
    for item in items or []:
        if isinstance(item, dict):
            out.update(item)
    return out


def _classes(items) -> dict:
    """class name -> arguments, honouring `cls:` (several drivers of one class, renamed)."""
    out = {}
    for key, args in _named(items).items():
        cls = args.get("cls", key) if isinstance(args, dict) else key
        out[cls] = args if isinstance(args, dict) else {}
    return out


def read_config(config: Config, path: Path | str, *, profiles: bool = True) -> Farm:
    """The farm in a loaded labgrid Config; with `profiles`, every profile is loaded and checked."""
    targets = {}
    for name, data in (config.get_targets() or {}).items():
        drivers = _classes((data or {}).get("drivers"))
        if "XenStrategy" not in drivers:
            continue
        profile = drivers["XenStrategy"].get("board") or \
            config.get_target_option(name, "xenlab_board", None)
        if not profile:
            raise XenlabError(f"target {name}: no board profile (options: xenlab_board)",
                              where=str(path))
        arch = load_profile(str(profile)).arch if profiles else None
        resources = _classes((data or {}).get("resources"))
        place = None
        if "RemotePlace" in resources:
            place = str(resources["RemotePlace"].get("name") or name)
        features = frozenset(map(str, (data or {}).get("features") or []))
        targets[name] = FarmTarget(name, str(profile), arch, features, place)
    return Farm(Path(path), config, targets)


def load_farm(path: Path | str, *, profiles: bool = True) -> Farm:
    """Read a farm file; a missing or invalid one is one XenlabError line."""
    path = Path(path)
    if not path.is_file():
        raise XenlabError(f"farm file {path} not found")
    try:
        config = Config(str(path))
    except (InvalidConfigError, NoConfigFoundError) as exc:
        raise XenlabError(str(exc), where=str(path)) from None
    farm = read_config(config, path, profiles=profiles)
    if not farm.targets:
        raise XenlabError("no target with a XenStrategy driver", where=str(path))
    return farm
