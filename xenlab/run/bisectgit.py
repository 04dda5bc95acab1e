"""The git side of a bisection: `git bisect` itself, in a private clone of the tester's tree.

The tester's checkout is never touched: the bisection runs in a clone under
the cache that borrows the tree's objects (`git clone --shared`), one per tree,
so every bisection of a tree builds in the same work directory (xenbuild keys
it by path) and each probe is an incremental build.  git decides which commit
to probe next and what the answer is, skips included, as `git bisect` does
for a person: xenlab only says good, bad or skip.
"""

from __future__ import annotations

import fcntl
import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import attr

from ..errors import XenlabError
from ..images.cache import cache_root

SHA_RE = re.compile(r"\b[0-9a-f]{40}\b")


def git(tree: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["git", "-C", str(tree), "-c", "advice.detachedHead=false", *args],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or ["failed"])[-1]
        raise XenlabError(f"git {' '.join(args[:2])} in {tree}: {why}")
    return proc


def toplevel(spec: str) -> Path:
    """The git work tree `spec` names, or one line saying it isn't one."""
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise XenlabError(f"{spec}: no such directory", where="--xen-source")
    proc = git(path, "rev-parse", "--show-toplevel", check=False)
    if proc.returncode != 0:
        raise XenlabError(f"{spec} is not a git repository: bisecting needs the tree's history",
                          where="--xen-source")
    return Path(proc.stdout.strip()).resolve()


def commit_of(tree: Path, rev: str, option: str) -> str:
    """`rev` as a full commit hash, or one line naming the option and the tree."""
    if not rev or rev.startswith("-") or any(c.isspace() or ord(c) < 32 for c in rev):
        raise XenlabError(f"{option} {rev!r} is not a revision")
    proc = git(tree, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}",
               check=False)
    if proc.returncode != 0:
        raise XenlabError(f"{option} {rev}: no such commit in {tree}")
    return proc.stdout.strip()


def check_range(tree: Path, good: str, bad: str) -> None:
    """good and bad as a bisectable range: distinct, good an ancestor of bad."""
    if good == bad:
        raise XenlabError(f"--good and --bad are the same commit ({good[:12]}): nothing to bisect")
    if git(tree, "merge-base", "--is-ancestor", good, bad, check=False).returncode != 0:
        raise XenlabError(f"--good {good[:12]} is not an ancestor of --bad {bad[:12]}: "
                          "a bisection needs good before bad in one history")


@attr.s(frozen=True, auto_attribs=True)
class Commit:
    sha: str
    subject: str
    author_date: str  # ISO 8601

    def short(self) -> str:
        return f"{self.sha[:12]} {self.subject}"


def describe(tree: Path, sha: str) -> Commit:
    out = git(tree, "show", "-s", "--format=%H%n%aI%n%s", sha).stdout.split("\n", 2)
    return Commit(out[0], out[2].strip(), out[1])


class BisectClone:
    """The private clone one tree is bisected in, held (locked) while a bisection runs."""

    def __init__(self, tree: Path, commits=()):
        self.tree = tree
        self.commits = tuple(commits)  # what the clone must reach (good and bad)
        name = hashlib.sha256(str(tree).encode()).hexdigest()[:16]
        self.path = cache_root() / "bisect-trees" / name
        self._lock = None

    def __enter__(self) -> "BisectClone":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.path.parent / f".{self.path.name}.lock", "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            raise XenlabError(f"another bisection of {self.tree} is running (its clone "
                              f"{self.path} is locked)") from None
        if (self.path / ".git").is_dir() and not self._usable():
            shutil.rmtree(self.path)  # its tree was made anew: clone it again (the work dir stays)
        if not (self.path / ".git").is_dir():
            git(self.path.parent, "clone", "--quiet", "--shared", "--no-checkout",
                str(self.tree), self.path.name)
        return self

    def _usable(self) -> bool:
        return all(git(self.path, "cat-file", "-e", f"{rev}^{{commit}}", check=False).returncode == 0
                   for rev in ("HEAD", *self.commits))

    def __exit__(self, *exc) -> None:
        git(self.path, "bisect", "reset", "--quiet", check=False)
        self._lock.close()

    def start(self, good: str, bad: str, marks=()) -> str:
        """`git bisect start bad good`, then the verdicts already given (a resumed
        bisection); what git said last."""
        git(self.path, "bisect", "reset", "--quiet", check=False)
        git(self.path, "reset", "--hard", "--quiet")  # a probe interrupted mid-checkout
        git(self.path, "clean", "-fdxq")
        said = git(self.path, "bisect", "start", bad, good).stdout
        for sha, verdict in marks:
            said = self.mark(sha, verdict)
        return said

    def mark(self, sha: str, verdict: str) -> str:
        """Tell git a probe's verdict (good, bad or skip); what git says."""
        proc = git(self.path, "bisect", verdict, sha, check=False)
        if proc.returncode != 0 and not _decided(proc.stdout):  # "We cannot bisect more!" is 2
            why = (proc.stderr.strip().splitlines() or ["failed"])[-1]
            raise XenlabError(f"git bisect {verdict} {sha[:12]} in {self.path}: {why}")
        return proc.stdout

    def head(self) -> str:
        return git(self.path, "rev-parse", "HEAD").stdout.strip()

    def checkout(self, sha: str) -> None:
        """The commit to probe in the work tree: git bisect's choice already, or the --bad
        commit probed first."""
        if self.head() != sha:
            git(self.path, "checkout", "--quiet", "--force", sha)

    def outcome(self, said: str) -> list[str] | None:
        """The first bad commit (one) or its candidates (several, when skips leave more
        than one), from what git said after a mark; None while bisecting goes on."""
        if not _decided(said):
            return None
        if "is the first bad commit" in said:
            return [SHA_RE.search(said.split("is the first bad commit")[0]).group(0)]
        tail = said.split("could be any of:", 1)[-1]
        return list(dict.fromkeys(SHA_RE.findall(tail)))


def _decided(said: str) -> bool:
    return "is the first bad commit" in said or "only 'skip'ped commits left" in said
