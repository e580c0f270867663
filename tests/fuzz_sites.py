"""Fuzzed site files: Hypothesis strategies that write YAML bytes, and the oracle they must meet.

The files start from the examples' valid shapes and are mutated: wrong types, unknown keys,
huge values, deep nesting, odd Unicode, IDN edge cases, YAML oddities and broken encodings.
The oracle (``check_site_file``) is the project rule: `mailstack validate` either refuses the
file with exit 1 and one ``path (line N): message`` line per problem and no traceback, or the
site is valid and renders. tests/unit/test_fuzz_sites.py runs it 10 000 times, bench/fuzz_sites.py
100 000 times.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import tempfile
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hypothesis
import typer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML
from typer.testing import CliRunner

from mailstack.cli import app
from mailstack.cli.site_commands import validate
from mailstack.render import plan_files
from mailstack.site.loader import load_site
from tests.conftest import EXAMPLES, fake_state

RUNNER = CliRunner()

Node = Any  # the plain data of a site file: dicts, lists, scalars and Raw pieces of YAML text


@dataclass(frozen=True)
class Raw:
    """YAML text written as it is: tags, aliases, merge keys, timestamps, flow oddities."""

    text: str


BASES: list[dict[str, Any]] = [YAML(typ="safe").load(path.read_text(encoding="utf-8")) for path in EXAMPLES]

# Unicode that breaks naive code: RTL and zero-width marks, BOM, NUL and other controls, line
# and paragraph separators, combining marks, a non-NFC form, emoji, surrogates, private use.
ODD_CHARS = [
    "\u202e", "\u200f", "\u200b", "\u200d", "\ufeff", "\x00", "\x07", "\x1b", "\x7f", "\x85",
    "\u2028", "\u2029", "\u0301", "e\u0301", "\u1e9b\u0323", "\U0001f4e7", "\U0001f468\u200d\U0001f469",
    "\ud800", "\udfff", "\ue000", "\uffff", "\t", "\n", "\r", " ", ":", "#", "'", '"', "\\", "{",
    "Ω", "ß", "İ", "ﬀ", "ا", "日本", "a",
]  # fmt: skip
odd_text = st.lists(st.sampled_from(ODD_CHARS), max_size=8).map("".join) | st.text(max_size=12)

# IDN edge cases: A-labels valid and not, label and name length limits, trailing dots, case,
# mixed scripts, fullwidth and ideographic dots, a leading hyphen, emoji, an empty label.
IDN_NAMES = [
    "xn--mnchen-3ya.example", "XN--MNCHEN-3YA.EXAMPLE", "xn--a.example", "xn--.example",
    "xn--zz-zzzz.example", "münchen.example", "MÜNCHEN.Example.", "bücher.example.",
    "paypal\u0430.example", "example\uff0etest", "example\u3002test", "a\uff0eb\uff0ec",
    f"{'a' * 63}.example", f"{'a' * 64}.example", ".".join(["a" * 49] * 5) + ".ex",
    ".".join(["a" * 50] * 5) + ".example", "-lead.example", "trail-.example", "a..example",
    "example.", ".example", "exa mple.test", "\U0001f4e7.example", "ｅｘａｍｐｌｅ.test",
    "ab--cd.example", "xn--ls8h.la", "ドメイン.テスト", "١٢٣.example", "example.123", "localhost",
]  # fmt: skip
idn_name = st.sampled_from(IDN_NAMES) | st.builds(
    "{}.{}".format, st.text(min_size=1, max_size=20), st.sampled_from(["example", "test", "xn--p1ai"])
)

TAGGED = [
    "!!python/object:os.system 'true'", "!!python/name:os.system ''", "!!binary aGVsbG8=",
    "!!set {a, b}", "!!omap [a: 1]", "!!str 25", "!!int '1'", "!!float x", "!custom 1",
    "*nowhere", "&anchor 7", "2001-12-14", "2001-12-14t21:59:43.10-05:00", "0o777", "0x1F",
    ".nan", "-.inf", "1e400", "0b101", "1_000", "~", "[]", "{}", "''", "{<<: {a: 1}}", "|\n  text",
]  # fmt: skip

scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from([0, -1, 2**31, 2**63, 10**30, 10**400]),
    st.just(Raw("9" * 5000)),  # beyond Python's int-from-text limit
    st.integers(),
    st.floats(),
    odd_text,
    idn_name,
    st.builds("{}@{}".format, st.sampled_from(["a", "A.B", "a+b", "", "a..b", "ü", "x" * 65]), idn_name),
    st.integers(254, 5000).map(lambda n: "x" * n),
    st.sampled_from(TAGGED).map(Raw),
)
# One level of collections: the "nest" mutation makes the deeper ones (st.recursive cost a
# third of the time spent drawing).
weird_value = scalar | st.lists(scalar, max_size=3) | st.dictionaries(st.text(max_size=5), scalar, max_size=3)
weird_key = st.one_of(
    st.sampled_from(["site", "name", "address", "to", "mode", "", "<<", "unknown", "Site"]),
    odd_text,
    st.integers(),
    st.sampled_from(["~", "true", "1.5", "[a, b]", "{a: 1}", "!!binary aGk="]).map(Raw),
)


def paths(node: Node, here: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in the data, the root included, in a fixed order."""
    found = [here]
    if len(here) > 40:  # deep nesting is made last (see mutated): no need to reach inside it
        return found
    if isinstance(node, dict):
        for key, value in node.items():
            found += paths(value, (*here, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += paths(value, (*here, i))
    return found


def _get(node: Node, path: tuple[Any, ...]) -> Node:
    for part in path:
        node = node[part]
    return node


def _replace(node: Node, path: tuple[Any, ...], value: Node) -> Node:
    """A copy of ``node`` with ``value`` at ``path`` (the data is never changed in place)."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(node, dict):
        return {**node, head: _replace(node[head], rest, value)}
    return [_replace(item, rest, value) if i == head else item for i, item in enumerate(node)]


def _rename(node: Node, old: str, new: str) -> Node:
    """Every string with ``old`` in it gets ``new`` instead: a domain renamed consistently."""
    if isinstance(node, dict):
        return {k: _rename(v, old, new) for k, v in node.items()}
    if isinstance(node, list):
        return [_rename(v, old, new) for v in node]
    return node.replace(old, new) if isinstance(node, str) else node


REQUIRED = ("site", "hostname", "admin_email", "domains")


# Built once: making strategies inside a draw costs more than the draw.
_SECTIONS = [
    st.lists(st.sampled_from([key for key in base if key not in REQUIRED]), max_size=2, unique=True)
    for base in BASES
]


@st.composite
def site_shapes(draw: st.DrawFn) -> dict[str, Any]:
    """An example's required fields and a few of its sections: small files parse fast, and
    every section of every example still comes up."""
    i = draw(st.integers(0, len(BASES) - 1))
    chosen = draw(_SECTIONS[i])
    return {key: value for key, value in BASES[i].items() if key in REQUIRED or key in chosen}


@st.composite
def mutated(draw: st.DrawFn) -> Node:
    """An example's data with up to three mutations at places drawn from it."""
    data: Node = draw(site_shapes())
    for _ in range(draw(st.integers(0, 3))):
        where = paths(data)[1:] or [()]
        path = where[draw(st.integers(0, len(where) - 1))]
        target = _get(data, path)
        kind = draw(st.sampled_from(["value", "key", "drop", "nest", "text", "rename"]))
        if kind == "value":
            data = _replace(data, path, draw(weird_value))
        elif kind == "key" and isinstance(target, dict):
            data = _replace(data, path, {**target, draw(weird_key): draw(weird_value)})
        elif kind == "drop" and path:
            parent = _get(data, path[:-1])
            rest = (
                {k: v for k, v in parent.items() if k != path[-1]}
                if isinstance(parent, dict)
                else [v for i, v in enumerate(parent) if i != path[-1]]
            )
            data = _replace(data, path[:-1], rest)
        elif kind == "nest":
            data = _replace(data, path, _nest(target, draw(st.integers(1, 10)), draw(st.booleans())))
        elif kind == "text" and isinstance(target, str):
            cut = draw(st.integers(0, len(target)))
            data = _replace(data, path, target[:cut] + draw(odd_text) + target[cut:])
        elif kind == "rename" and isinstance(data, dict) and isinstance(data.get("domains"), list):
            # Keeps the site consistent, so that IDN names reach rendering.
            names = [d["name"] for d in data["domains"] if isinstance(d, dict) and "name" in d]
            if names and isinstance(names[0], str):
                data = _rename(data, names[0], draw(idn_name))
    if draw(st.integers(0, 499)) == 0:
        # Last, so that nothing above recurses into it: deeper than Python's recursion limit.
        where = paths(data)[1:] or [()]
        path = where[draw(st.integers(0, len(where) - 1))]
        data = _replace(data, path, _nest(_get(data, path), draw(st.sampled_from([200, 400])), True))
    return data


def _nest(node: Node, depth: int, in_lists: bool) -> Node:
    for _ in range(depth):
        node = [node] if in_lists else {"a": node}
    return node


def _scalar(value: Node) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a YAML double-quoted scalar
    if value is None:
        return "null"
    if isinstance(value, float):
        return {"inf": ".inf", "-inf": "-.inf", "nan": ".nan"}.get(str(value), repr(value))
    return json.dumps(value)


def _key(key: Any) -> str:
    text = _scalar(key)
    return f"? {text}\n:" if isinstance(key, Raw) and text.startswith(("[", "{")) else f"{text}:"


def to_block(node: Node, indent: str = "") -> str:
    """Block-style YAML, the way people write site files (flow style below 50 levels deep)."""
    if isinstance(node, dict) and node and _depth(node) < 50:
        lines = []
        for key, value in node.items():
            child = to_block(value, indent + "  ")
            block = isinstance(value, dict | list) and value and _depth(value) < 50
            lines.append(f"{indent}{_key(key)}" + (f"\n{child}" if block else f" {child}"))
        return "\n".join(lines)
    if isinstance(node, list) and node and _depth(node) < 50:
        items = []
        for value in node:
            child = to_block(value, indent + "  ")
            items.append(f"{indent}- {child.lstrip() if isinstance(value, dict | list) else child}")
        return "\n".join(items)
    return to_flow(node)


def to_flow(node: Node) -> str:
    """Flow-style YAML on one line (iterative: a value can be nested thousands of levels deep)."""
    out: list[str] = []
    stack: list[Any] = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, _Text):
            out.append(item.text)
        elif isinstance(item, dict):
            parts: list[Any] = [_Text("{")]
            for i, (key, value) in enumerate(item.items()):
                parts += [_Text(", " if i else ""), _Text(f"{_scalar(key)}: "), value]
            stack += reversed([*parts, _Text("}")])
        elif isinstance(item, list):
            parts = [_Text("[")]
            for i, value in enumerate(item):
                parts += [_Text(", " if i else ""), value]
            stack += reversed([*parts, _Text("]")])
        else:
            out.append(_scalar(item))
    return "".join(out)


@dataclass(frozen=True)
class _Text:
    text: str


def _depth(node: Node) -> int:
    depth = 0
    while isinstance(node, dict | list) and node:
        node = next(iter(node.values())) if isinstance(node, dict) else node[0]
        depth += 1
    return depth


_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u([0-9a-f]{4})")


def _unescaped(text: str) -> str:
    """The JSON escapes (\\u202e) as the characters themselves, as an editor would write them:
    raw controls, separators and astral characters in the file; lone surrogates stay lone."""
    text = _ESCAPE.sub(lambda m: m.group(1) + chr(int(m.group(2), 16)), text)
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "surrogatepass")  # pairs joined


# Changes to the text itself: the YAML and encoding oddities no data can express.
TEXT_EDITS: dict[str, Callable[[str], str]] = {
    "none": lambda text: text,
    "raw unicode": _unescaped,
    "bom": lambda text: "\ufeff" + text,
    "tabs": lambda text: text.replace("\n  ", "\n\t", 3),
    "duplicate key": lambda text: text + "\n" + text.splitlines()[0] if text else text,
    "two documents": lambda text: f"{text}\n---\n{text}",
    "document markers": lambda text: f"%YAML 1.1\n---\n{text}\n...\n",
    "anchor and alias": lambda text: re.sub(r"\n(\w+):", r"\n\1: &a", text, count=1) + "\nextra: *a",
    "crlf": lambda text: text.replace("\n", "\r\n"),
    "truncated": lambda text: text[: len(text) // 2],
    "empty": lambda _: "",
    "comment only": lambda _: "# nothing but a comment\n",
}
ENCODINGS: dict[str, Callable[[str], bytes]] = {
    "utf-8": lambda text: text.encode("utf-8", "surrogatepass"),
    "latin-1": lambda text: text.encode("latin-1", "replace"),
    "utf-16": lambda text: text.encode("utf-16", "surrogatepass"),
    "stray byte": lambda text: text.encode("utf-8", "surrogatepass") + b"\n# \xff\xfe\n",
}


@st.composite
def site_files(draw: st.DrawFn) -> bytes:
    """The bytes of a fuzzed site file: mostly UTF-8 block YAML, sometimes flow, odd or broken."""
    data = draw(mutated())
    text = draw(st.sampled_from([to_block, to_block, to_block, to_flow]))(data) + "\n"
    text = TEXT_EDITS[draw(st.sampled_from(list(TEXT_EDITS)))](text)
    odd_encoding = draw(st.integers(0, 9)) == 0
    encoding = draw(st.sampled_from(list(ENCODINGS))) if odd_encoding else "utf-8"
    return ENCODINGS[encoding](text)


# One problem per line: `path (line N): message`, a YAML syntax error with its place, or the
# whole file's shape at line 1.
_PROBLEM = re.compile(
    r"^  (?:\S.*? \(line \d+\)|\(line 1\)|YAML syntax error(?: \(line \d+, column \d+\))?): \S"
)
_HEADER = re.compile(r"^error: .+: (\d+) problems?:$")
_UNREADABLE = re.compile(r"^error: .+ is not UTF-8 text \(byte \d+\): .+$")


def check_site_file(content: bytes, workdir: Path, *, plan: bool, full_render: bool) -> str:
    """Hold `mailstack validate` on ``content`` to the project rule; return "valid" or "refused".

    The validate command runs as the CLI runs it, minus click's argument parsing: its function
    with the error handling it is decorated with (CliRunner costs more than most loads do).
    With ``plan``, a valid site is also rendered in memory (every template, a fixed fake
    state); with ``full_render`` it goes through `mailstack render` in CliRunner with a state
    of its own, as a user's would (about half a second: it makes keys and certificates).
    """
    site_file = workdir / "site.yaml"
    site_file.write_bytes(content)
    stderr = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(stderr):
        try:
            validate(site_file)
            code = 0
        except typer.Exit as exc:
            code = exc.exit_code
    if code == 1:
        _assert_clean_refusal(stderr.getvalue(), content)
        return "refused"
    assert code == 0, f"exit {code}: {stderr.getvalue()}\nfor {content[:2000]!r}"
    if plan:
        site = load_site(site_file)
        plan_files(site, fake_state(site.domain_names, site.tls.mode), workdir / "state", workdir / "out")
    if full_render:
        with tempfile.TemporaryDirectory(dir=workdir) as fresh:
            args = ["render", str(site_file), "-o", f"{fresh}/out", "--state", f"{fresh}/state"]
            rendered = RUNNER.invoke(app, args)
        assert rendered.exception is None or isinstance(rendered.exception, SystemExit), _failure(
            rendered, content
        )
        assert rendered.exit_code == 0, _failure(rendered, content)
    return "valid"


def _assert_clean_refusal(stderr: str, content: bytes) -> None:
    lines = stderr.rstrip("\n").split("\n")
    if _UNREADABLE.match(lines[0]) and len(lines) == 1:
        return
    header = _HEADER.match(lines[0])
    assert header, f"no 'N problems' header in:\n{stderr}\nfor {content[:2000]!r}"
    problems = lines[1:]
    assert len(problems) == int(header.group(1)), f"one problem per line, in:\n{stderr}\nfor {content!r}"
    for line in problems:
        assert _PROBLEM.match(line), f"no field path or line in {line!r}\nfor {content[:2000]!r}"


def _failure(result: Any, content: bytes) -> str:
    exc = result.exception
    trace = "".join(traceback.format_exception(exc)) if exc else ""
    return f"exit {result.exit_code}\n{result.output}\n{trace}\nfor {content[:2000]!r}"


def fuzz(
    workdir: Path, examples: int, *, plans: int, full_renders: int, seed: int | None = None
) -> Counter[str]:
    """Run ``examples`` fuzzed site files through the oracle; count valid and refused.

    Every file is validated; the first ``plans`` valid sites are also rendered in memory and
    the first ``full_renders`` of them through `mailstack render` (rendering costs several
    times what validating does, and a full render half a second).
    """
    outcomes: Counter[str] = Counter()

    # database=None: nothing written beside the tests. Without a seed, derandomized: the
    # same files on every run (CI); a seed draws other files (the bench).
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=seed is None,
        suppress_health_check=list(HealthCheck),
    )
    @given(site_files())
    def one(content: bytes) -> None:
        valid = outcomes["valid"]
        outcome = check_site_file(content, workdir, plan=valid < plans, full_render=valid < full_renders)
        outcomes[outcome] += 1

    (one if seed is None else hypothesis.seed(seed)(one))()
    return outcomes
