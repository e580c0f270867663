"""A strict parser of MTA-STS policy files (RFC 8461 §3.2), and MX pattern matching (§4.1).

The renderer writes the policy (``dns.mta_sts_policy``); this module reads one back the way
a strict sender would, so that tests and `mailstack check` can prove what the web service
serves. Strict means: the ABNF of §3.2 exactly, plus the rules a conforming sender relies
on (version first, each of version, mode and max_age exactly once, at least one mx unless
the mode is none, max_age at most 31557600, at most 64 KiB).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

MAX_AGE_LIMIT = 31557600  # RFC 8461 §3.2: "up to 31557600" (about one year)
MAX_POLICY_BYTES = 64 * 1024  # §3.3: senders may refuse larger policy bodies

Mode = Literal["enforce", "testing", "none"]

# RFC 5321 Domain: sub-domain *("." sub-domain); sub-domain = Let-dig [Ldh-str].
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_DOMAIN = rf"{_LABEL}(?:\.{_LABEL})*"
_MX_VALUE = re.compile(rf"(?:\*\.)?{_DOMAIN}")
_EXT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
# sts-policy-vchar = %x21-7E / UTF8-2 / UTF8-3 / UTF8-4; values may hold WSP between vchars.
_EXT_VALUE = re.compile(r"[!-~\u0080-\U0010ffff](?:[ \t]*[!-~\u0080-\U0010ffff])*")
_FIELD = re.compile(r"(?P<name>[^:]*):[ \t]*(?P<value>.*?)[ \t]*")


class PolicyError(ValueError):
    """The text is not a valid MTA-STS policy; the message names the line."""


@dataclass(frozen=True)
class Policy:
    version: str
    mode: Mode
    max_age: int
    mx: tuple[str, ...]
    extensions: tuple[tuple[str, str], ...] = ()

    def covers(self, host: str) -> bool:
        """Whether an MX host name matches one of the policy's mx patterns (§4.1)."""
        return any(mx_matches(pattern, host) for pattern in self.mx)


def parse_policy(text: str | bytes) -> Policy:
    """Parse a policy body; raise PolicyError on anything RFC 8461 §3.2 does not allow."""
    raw = text if isinstance(text, bytes) else text.encode("utf-8")
    if len(raw) > MAX_POLICY_BYTES:
        raise PolicyError(f"policy is {len(raw)} bytes, more than {MAX_POLICY_BYTES}")
    try:
        body = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(f"policy is not UTF-8: {exc}") from None
    # sts-policy-term-delim = CRLF / LF; one optional delimiter after the last field.
    lines = body.replace("\r\n", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise PolicyError("policy is empty")
    fields: list[tuple[str, str]] = []
    for number, line in enumerate(lines, start=1):
        if "\r" in line:
            raise PolicyError(f"line {number}: a CR that is not part of CRLF")
        match = _FIELD.fullmatch(line)
        if match is None:
            raise PolicyError(f"line {number}: not a 'name: value' field: {line!r}")
        name, value = match.group("name"), match.group("value")
        if not _EXT_NAME.fullmatch(name):
            raise PolicyError(f"line {number}: bad field name {name!r}")
        if not _EXT_VALUE.fullmatch(value):
            raise PolicyError(f"line {number}: bad or empty value for {name!r}")
        fields.append((name, value))
    return _policy(fields)


def _policy(fields: list[tuple[str, str]]) -> Policy:
    known = ("version", "mode", "max_age")
    if fields[0][0] != "version":
        raise PolicyError(f"the first field must be version, not {fields[0][0]!r}")
    single: dict[str, str] = {}
    for name, value in fields:
        if name in known:
            if name in single:
                raise PolicyError(f"{name} appears more than once")
            single[name] = value
    missing = [name for name in known if name not in single]
    if missing:
        raise PolicyError(f"missing field(s): {', '.join(missing)}")
    if single["version"] != "STSv1":
        raise PolicyError(f"version must be STSv1, not {single['version']!r}")
    mode = single["mode"]
    if mode not in ("enforce", "testing", "none"):
        raise PolicyError(f"mode must be enforce, testing or none, not {mode!r}")
    max_age = single["max_age"]
    if not re.fullmatch(r"[0-9]{1,10}", max_age) or int(max_age) > MAX_AGE_LIMIT:
        raise PolicyError(f"max_age must be 0..{MAX_AGE_LIMIT} (at most 10 digits), not {max_age!r}")
    mx = tuple(value for name, value in fields if name == "mx")
    for pattern in mx:
        if not _MX_VALUE.fullmatch(pattern):
            raise PolicyError(f"mx {pattern!r} is not a domain or a *.domain pattern")
    if mode != "none" and not mx:
        raise PolicyError(f"mode {mode} needs at least one mx pattern")
    extensions = tuple((n, v) for n, v in fields if n not in (*known, "mx"))
    return Policy("STSv1", mode, int(max_age), mx, extensions)  # type: ignore[arg-type]


def mx_matches(pattern: str, host: str) -> bool:
    """RFC 8461 §4.1: case-insensitive; ``*.`` stands for exactly one leftmost label."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        label, _, rest = host.partition(".")
        return bool(label) and rest == pattern[2:]
    return host == pattern
