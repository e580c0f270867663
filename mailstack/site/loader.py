"""YAML → ``Site``, with every problem reported as ``field.path (line N): message``."""

from __future__ import annotations

import difflib
import re
import types
import typing
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.composer import MaxDepthExceededError
from ruamel.yaml.error import MarkedYAMLError, YAMLError, YAMLWarning
from ruamel.yaml.reader import ReaderError

from mailstack.errors import SiteFileError, SiteValidationError
from mailstack.site.models import Loc, Site, _dotted
from mailstack.site.tls import ca_bundle_problem

Lines = dict[Loc, int]

# A site nests six levels at most; this leaves room and stops a runaway file early.
MAX_DEPTH = 50


def load_site(path: Path) -> Site:
    """Read, parse and validate a site file; raise a ``UserError`` naming every problem."""
    text = _read(path)
    site = _anchor_paths(parse_site(text, source=str(path)), path.resolve().parent)
    problems = list(_file_problems(site))
    if problems:
        _, lines = _parse_yaml(text, str(path))
        raise SiteValidationError(
            str(path), [f"{_dotted(loc)} (line {_line(loc, lines)}): {message}" for loc, message in problems]
        )
    return site


def _file_problems(site: Site) -> Iterator[tuple[Loc, str]]:
    """Files the site names that must hold something specific (checked once anchored)."""
    bundle = site.tls.outbound_ca_bundle
    if bundle is not None and (problem := ca_bundle_problem(bundle)) is not None:
        yield ("tls", "outbound_ca_bundle"), problem


def _anchor_paths(site: Site, base: Path) -> Site:
    """Relative file paths in the site mean: relative to the site file (and ~ is home)."""
    tls = site.tls
    if tls.acme is not None and tls.acme.ca_bundle is not None:
        bundle = str(base / Path(tls.acme.ca_bundle).expanduser())
        acme = tls.acme.model_copy(update={"ca_bundle": bundle})
        site = site.model_copy(update={"tls": tls.model_copy(update={"acme": acme})})
        tls = site.tls
    if tls.outbound_ca_bundle is not None:
        bundle = str(base / Path(tls.outbound_ca_bundle).expanduser())
        site = site.model_copy(update={"tls": tls.model_copy(update={"outbound_ca_bundle": bundle})})
        tls = site.tls
    if tls.cert_file is None or tls.key_file is None:
        return site
    anchored = {
        "cert_file": str(base / Path(tls.cert_file).expanduser()),
        "key_file": str(base / Path(tls.key_file).expanduser()),
    }
    return site.model_copy(update={"tls": tls.model_copy(update=anchored)})


def parse_site(text: str, source: str = "<site>") -> Site:
    data, lines = _parse_yaml(text, source)
    try:
        return Site.model_validate(data)
    except ValidationError as exc:
        problems = sorted(_problems(exc, data, lines), key=lambda p: (p[0], p[1]))
        raise SiteValidationError(source, [msg for _, msg in problems]) from None


def _read(path: Path) -> str:
    if not path.exists():
        raise SiteFileError(f"site file not found: {path}")
    if path.is_dir():
        raise SiteFileError(f"{path} is a directory; pass the site file itself (such as {path}/site.yaml)")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SiteFileError(f"{path} is not UTF-8 text (byte {exc.start}): {exc.reason}") from None
    except OSError as exc:
        raise SiteFileError(f"cannot read {path}: {exc.strerror}") from None


def _parse_yaml(text: str, source: str) -> tuple[dict[str, Any], Lines]:
    yaml = YAML(typ="rt")  # round-trip mode keeps line numbers; it rejects duplicate keys
    # Without a bound, ruamel composes nested collections recursively (a RecursionError) and
    # its scanner slows quadratically: a 5000-deep list took seconds to fail.
    yaml.max_depth = MAX_DEPTH
    try:
        with warnings.catch_warnings():
            # Such as a reused anchor, which YAML allows (the alias means the latest): no
            # reason to print a Python warning, with ruamel's source line, to a user.
            warnings.simplefilter("ignore", YAMLWarning)
            doc = yaml.load(text)
    except MaxDepthExceededError as exc:
        mark = exc.problem_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = f"YAML syntax error{where}: values nested more than {MAX_DEPTH} levels deep"
        raise SiteValidationError(source, [problem]) from None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        # One line, whatever the values ruamel quotes hold (a duplicate key's, with a newline).
        what = " ".join(" ".join(str(p) for p in (exc.context, exc.problem) if p).split())
        raise SiteValidationError(source, [f"YAML syntax error{where}: {what}"]) from None
    except ReaderError as exc:
        # Its message spans two lines and counts characters from the start of the file.
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - text.rfind("\n", 0, exc.position)
        problem = (
            f"YAML syntax error (line {line}, column {column}): character U+{exc.character:04X} is not "
            f'allowed in YAML; inside double quotes write it as "\\u{exc.character:04x}"'
        )
        raise SiteValidationError(source, [problem]) from None
    except YAMLError as exc:
        raise SiteValidationError(source, [f"YAML syntax error: {' '.join(str(exc).split())}"]) from None
    except ValueError as exc:
        # ruamel's constructors call int() and datetime() unguarded: a 5000-digit number,
        # a timestamp like 2001-13-45.
        what = str(exc).partition("; use sys.set_int_max_str_digits")[0]  # advice for programmers
        raise SiteValidationError(source, [f"YAML syntax error: a value cannot be read: {what}"]) from None
    if not isinstance(doc, CommentedMap):
        kind = (
            "an empty file"
            if doc is None
            else "a list"
            if isinstance(doc, list)
            else f"a single value ({doc!r})"
        )
        raise SiteValidationError(
            source,
            [f"(line 1): the site file must be a mapping of fields (site, hostname, …), not {kind}"],
        )
    lines: Lines = {(): doc.lc.line + 1}
    data = _plain(doc, (), lines)
    if surrogates := sorted(_surrogates(data), key=lambda loc: _line(loc, lines)):
        raise SiteValidationError(
            source,
            [
                f"{_dotted(loc)} (line {_line(loc, lines)}): has an escaped UTF-16 surrogate "
                "(\\ud800-\\udfff) that is no character; write the character itself"
                for loc in surrogates
            ],
        )
    return data, lines


_SURROGATE = re.compile("[\ud800-\udfff]")


def _surrogates(node: Any, loc: Loc = ()) -> Iterator[Loc]:
    """Where a string (a value or a key) holds a lone surrogate, which a YAML "\\ud800" escape
    makes and no output file can encode."""
    if isinstance(node, dict):
        for key, value in node.items():
            if _SURROGATE.search(key):
                yield (*loc, key)
            else:
                yield from _surrogates(value, (*loc, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _surrogates(value, (*loc, i))
    elif isinstance(node, str) and _SURROGATE.search(node):
        yield loc


def _plain(node: Any, loc: Loc, lines: Lines) -> Any:
    """Turn ruamel's round-trip nodes into plain Python values, recording each item's line."""
    if isinstance(node, CommentedMap):
        out: dict[str, Any] = {}
        positions = node.lc.data or {}
        for key, value in node.items():
            # A key that a merge (<<: *anchor) brought in has no place of its own: the mapping's.
            position = positions.get(key)
            line = (position[0] if position else node.lc.line) + 1
            key_text = str(key)
            lines[(*loc, key_text)] = line
            out[key_text] = _plain(value, (*loc, key_text), lines)
        return out
    if isinstance(node, CommentedSeq):
        items = []
        for i, value in enumerate(node):
            lines[(*loc, i)] = node.lc.item(i)[0] + 1
            items.append(_plain(value, (*loc, i), lines))
        return items
    for plain in (bool, int, float, str):
        if isinstance(node, plain):
            return plain(node)
    return node


def _problems(exc: ValidationError, data: Any, lines: Lines) -> Iterator[tuple[int, str]]:
    errors = exc.errors()
    failed = {_data_loc(e["loc"], data) for e in errors if e["type"] != "too_short"}
    for error in errors:
        if error["type"] == "too_short" and _data_loc(error["loc"], data) in failed:
            continue  # a list emptied by its own item errors: those say it all
        if error["type"] == "site_rules":
            ctx = error.get("ctx") or {}
            for loc, message in ctx["problems"]:
                yield _line(loc, lines), f"{_dotted(loc)} (line {_line(loc, lines)}): {message}"
            continue
        loc = _data_loc(error["loc"], data)
        line = _line(loc, lines)
        path = _dotted(loc) or "(top level)"
        yield line, f"{path} (line {line}): {_message(error, loc)}"


def _data_loc(loc: tuple[int | str, ...], data: Any) -> Loc:
    """Keep the parts of pydantic's error location that name places in the file."""
    out: list[str | int] = []
    node = data
    for i, part in enumerate(loc):
        if _has(node, part):
            node = node[part]
        elif isinstance(node, dict) and isinstance(part, str) and i == len(loc) - 1:
            pass  # a missing field: name it, at its parent's line
        else:
            continue  # pydantic's own step (a union member, a validator), not a place in the file
        out.append(part)
    return tuple(out)


def _has(node: Any, part: int | str) -> bool:
    if isinstance(node, dict):
        return isinstance(part, str) and part in node
    return isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)


def _line(loc: Loc, lines: Lines) -> int:
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return 1


def _message(error: ErrorDetails, loc: Loc) -> str:
    kind, message = error["type"], error["msg"]
    if kind == "extra_forbidden":
        known = _field_names(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; known fields: {', '.join(known)}"
        return f"unknown field {loc[-1]!r}{hint}"
    if kind == "missing":
        return "required field is missing"
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    return message[:1].lower() + message[1:]


def _field_names(loc: Loc) -> list[str]:
    """The field names of the model found at ``loc`` in the site description."""
    model: type[BaseModel] = Site
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        inner = _model_in(field.annotation) if field else None
        if inner is None:
            return []
        model = inner
    return list(model.model_fields)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) in (
        tuple,
        typing.Union,
    ):
        for arg in typing.get_args(annotation):
            if (found := _model_in(arg)) is not None:
                return found
    return None
