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
import yaml
from labgrid.config import Config
from labgrid.exceptions import InvalidConfigError, NoConfigFoundError

from ..errors import XenlabError
from ..plan.profile import load_profile
from ..schema import validate
from .record import safe_name


@attr.s(frozen=True, auto_attribs=True)
class FarmTarget:
    """A XenStrategy target of the farm."""

    name: str  # the labgrid target; run records live under results/<name>/
    profile: str  # its board profile (boards/<profile>.yaml)
    arch: str | None  # from the profile, when it was loaded
    features: frozenset[str]
    place: str | None  # the RemotePlace's name: behind a coordinator, needs a lock
    # options: xenlab_matrix_only: a board only variants name (gicv3, 4 CPUs): no dom0 smoke by default
    matrix_only: bool = False

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

    def select(self, names: Sequence[str] = (), variant=None) -> list[FarmTarget]:
        """The targets named (each checked); else those whose board `variant` names,
        or without a variant every target but the matrix-only ones."""
        if names:
            chosen = [self.target(n) for n in names]
            wrong = [t for t in chosen if variant is not None and not variant.applies_to(t.profile)]
            if wrong:
                raise XenlabError(f"target {wrong[0].name} is board {wrong[0].profile}, which variant "
                                  f"{variant.name} is not for (boards: {', '.join(variant.boards)})")
            return chosen
        if variant is None:
            return [t for t in self.targets.values() if not t.matrix_only]
        chosen = [t for t in self.targets.values() if variant.applies_to(t.profile)]
        if not chosen:
            raise XenlabError(f"no target of {self.path} is a board variant {variant.name} is for "
                              f"(boards: {', '.join(variant.boards)})")
        return chosen


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


_NAMED = {"type": ["object", "array", "null"],
          "items": {"type": "object", "additionalProperties": {"type": ["object", "null"]}},
          "additionalProperties": {"type": ["object", "null"]}}
# The parts of a labgrid env xenlab reads, checked before labgrid builds anything from them.
SCHEMA = {
    "type": "object",
    "properties": {
        "targets": {"type": ["object", "null"], "additionalProperties": {
            "type": ["object", "null"],
            "properties": {"resources": _NAMED, "drivers": _NAMED,
                           "options": {"type": ["object", "null"]},
                           "features": {"type": ["array", "null"], "items": {"type": "string"}}}}},
        "options": {"type": ["object", "null"]},
        "imports": {"type": ["array", "null"], "items": {"type": "string"}},
        "tools": {"type": ["object", "null"]},
    },
}


def read_config(config: Config, path: Path | str, *, profiles: bool = True) -> Farm:
    """The farm in a loaded labgrid Config; with `profiles`, every profile is loaded and checked."""
    validate(config.data, SCHEMA, str(path))
    targets = {}
    for name, data in (config.get_targets() or {}).items():
        drivers = _classes((data or {}).get("drivers"))
        if "XenStrategy" not in drivers:
            continue
        # Run records and logs live under results/<target>/: the name must be a safe one.
        try:
            safe_name(str(name), "target")
        except XenlabError as exc:
            raise XenlabError(f"key 'targets.{name}': {exc}", where=str(path)) from None
        profile = drivers["XenStrategy"].get("board") or \
            ((data or {}).get("options") or {}).get("xenlab_board")
        if not profile:
            raise XenlabError(f"key 'targets.{name}.options.xenlab_board': missing (the target's "
                              f"board profile, boards/<name>.yaml)", where=str(path))
        if profiles:
            try:
                arch = load_profile(str(profile)).arch
            except XenlabError as exc:
                raise XenlabError(f"key 'targets.{name}.options.xenlab_board': {profile!r}: {exc}",
                                  where=str(path)) from None
        else:
            arch = None
        resources = _classes((data or {}).get("resources"))
        place = None
        if "RemotePlace" in resources:
            place = str(resources["RemotePlace"].get("name") or name)
        features = frozenset(map(str, (data or {}).get("features") or []))
        matrix_only = ((data or {}).get("options") or {}).get("xenlab_matrix_only", False)
        if not isinstance(matrix_only, bool):
            raise XenlabError(f"key 'targets.{name}.options.xenlab_matrix_only': {matrix_only!r} is not "
                              "true or false", where=str(path))
        targets[name] = FarmTarget(name, str(profile), arch, features, place, matrix_only)
    return Farm(Path(path), config, targets)


def _config_error(exc: Exception) -> str:
    """labgrid's multi-line YAML complaint as one line with the line and column."""
    cause = exc.__context__
    mark = getattr(cause, "problem_mark", None)
    if mark is not None:
        problem = getattr(cause, "problem", None) or "invalid YAML"
        return f"not valid YAML at line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return " ".join(str(exc).split())


# labgrid indexes these before any check of its own (Config.get_option reads `options`).
_TOP_LEVEL = {"options": yaml.MappingNode, "tools": yaml.MappingNode, "images": yaml.MappingNode,
              "targets": yaml.MappingNode, "imports": yaml.SequenceNode}


def _structure_error(path: Path) -> str | None:
    """What labgrid would trip over or let pass: a top level that is not a mapping
    (a TypeError inside labgrid), or a key given twice in one mapping (labgrid only
    warns, and the second silently replaces the first: a target's `options`)."""
    try:
        root = yaml.compose(path.read_text(), Loader=yaml.SafeLoader)
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        return None  # labgrid's reading below says what is wrong
    def kind(node) -> str:
        return "a list" if isinstance(node, yaml.SequenceNode) else \
            "a mapping" if isinstance(node, yaml.MappingNode) else f"the value {node.value[:40]!r}"
    if root is not None and not isinstance(root, yaml.MappingNode):
        return f"the farm file is {kind(root)}, not a mapping with 'targets:'"
    for key, value in root.value if root is not None else ():
        want = _TOP_LEVEL.get(key.value) if isinstance(key, yaml.ScalarNode) else None
        if want is not None and not isinstance(value, want):
            what = "a list" if want is yaml.SequenceNode else "a mapping"
            return f"key '{key.value}': {kind(value)}, not {what} (line {value.start_mark.line + 1})"
    todo = [root] if root is not None else []
    while todo:
        node = todo.pop()
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key, value in node.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else None
                if name is not None and name in seen:
                    return (f"key {name!r} given twice in one mapping (line "
                            f"{key.start_mark.line + 1}, column {key.start_mark.column + 1}): "
                            "the second would silently replace the first")
                seen.add(name)
                todo += [key, value]
        elif isinstance(node, yaml.SequenceNode):
            todo += node.value
    return None


def load_farm(path: Path | str, *, profiles: bool = True) -> Farm:
    """Read a farm file; a missing or invalid one is one XenlabError line."""
    path = Path(path)
    if not path.is_file():
        raise XenlabError(f"farm file {path} not found")
    if (problem := _structure_error(path)):
        raise XenlabError(problem, where=str(path))
    try:
        config = Config(str(path))
    except (InvalidConfigError, NoConfigFoundError) as exc:
        raise XenlabError(_config_error(exc), where=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise XenlabError(f"cannot read the farm file: {exc}", where=str(path)) from None
    farm = read_config(config, path, profiles=profiles)
    if not farm.targets:
        raise XenlabError("no target with a XenStrategy driver", where=str(path))
    return farm
