"""One loader for xenlab's YAML data: parse, validate with jsonschema, fail in one line.

Board profiles, image-set manifests and known issues are data written by
people; a mistake in one is a `XenlabError` naming the file, the key and the
value ("boards/x.yaml: key 'memory.end': '2G' is not an integer"), never a
traceback.  Each module keeps its own schema next to the code that reads it;
the wording of the errors lives here, once.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import jsonschema
import yaml

from .errors import XenlabError

_TYPE_WORDS = {"integer": "an integer", "number": "a number", "string": "a string",
               "boolean": "true or false", "array": "a list", "object": "a mapping"}


def key_path(path) -> str:
    """['memory', 'reserved', 0, 'end'] -> 'memory.reserved[0].end'."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def show(value) -> str:
    """A value as an error quotes it: repr, cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _message(err: jsonschema.ValidationError) -> tuple[str, str]:
    """(key path, message) for one schema error, in the words a file's author uses."""
    path = list(err.absolute_path)
    v, value = err.validator, err.instance
    if v == "type":
        want = err.validator_value
        want = want if isinstance(want, str) else want[0]
        return key_path(path), f"{show(value)} is not {_TYPE_WORDS.get(want, want)}"
    if v == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        extra = sorted(set(value) - set(allowed), key=str)
        return key_path(path + extra[:1]), f"unknown key (allowed here: {', '.join(allowed)})"
    if v == "required":
        missing = [k for k in err.validator_value if k not in value]
        return key_path(path + missing[:1]), "missing"
    if v == "enum":
        return key_path(path), f"{show(value)} is not one of {', '.join(map(str, err.validator_value))}"
    if v in ("minProperties", "maxProperties"):
        return key_path(path), f"needs exactly one of {', '.join(sorted(err.schema['properties']))}"
    if v == "pattern":
        return key_path(path), f"{show(value)} is not allowed here (must match {err.validator_value})"
    if v in ("minimum", "exclusiveMinimum"):
        return key_path(path), f"{show(value)} is too small"
    if v in ("minLength", "minItems"):
        return key_path(path), "must not be empty"
    if v in ("maximum", "exclusiveMaximum"):
        return key_path(path), f"{show(value)} is too large (at most {err.validator_value})"
    if v == "oneOf" and all("properties" in form for form in err.validator_value):
        forms = " or ".join("{" + ", ".join(form["properties"]) + "}" for form in err.validator_value)
        return key_path(path), f"{show(value)} is none of the forms allowed here: {forms}"
    return key_path(path), f"{show(value)}: {err.message}"


def validate(data, schema: dict, where: str) -> None:
    """Raise one XenlabError line for the most relevant schema error of `data`, if any."""
    err = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(schema).iter_errors(data))
    if err is not None:
        key, message = _message(err)
        raise XenlabError(f"key '{key}': {message}", where=where)


# Far above any record, profile, farm file or state xenlab writes; a hostile file stops here.
MAX_DATA_BYTES = 16 << 20


def read_data(path: Path | str, what: str, where: str | None = None,
              limit: int = MAX_DATA_BYTES) -> bytes:
    """`path`'s bytes when it is a regular file of at most `limit` bytes; else one line.

    Opened without blocking and checked before reading: a FIFO (which would wait for a
    writer for ever), a device or a huge file is refused, never waited on or read whole.
    """
    where = where or str(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise XenlabError(f"cannot read {what}: {exc.strerror}", where=where) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise XenlabError(f"cannot read {what}: not a regular file", where=where)
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise XenlabError(f"cannot read {what}: {exc.strerror}", where=where) from None
    finally:
        os.close(fd)
    if size > limit:
        raise XenlabError(f"cannot read {what}: larger than {limit >> 20} MiB", where=where)
    return b"".join(chunks)


def read_yaml(path: Path | str, what: str, where: str | None = None):
    """The YAML document in `path`; unreadable or invalid YAML is one line with line and column."""
    where = where or str(path)
    try:
        text = read_data(path, what, where).decode()
    except UnicodeDecodeError as exc:
        raise XenlabError(f"cannot read {what}: {exc}", where=where) from None
    try:
        return yaml.safe_load(text)
    except RecursionError:
        raise XenlabError("not valid YAML: nested too deeply", where=where) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise XenlabError(f"not valid YAML{at}: {problem}", where=where) from None


def load(path: Path | str, schema: dict, what: str, where: str | None = None):
    """Read `path` as YAML and validate it against `schema`: the data, or one error line."""
    where = where or str(path)
    data = read_yaml(path, what, where)
    validate(data, schema, where)
    return data
