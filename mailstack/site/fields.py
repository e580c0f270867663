"""Field types of the site description: parsing and normalising of single values.

Each parser raises ``ValueError`` with a message meant for the person editing the file;
pydantic attaches the field path and the loader adds the line.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from decimal import Decimal
from typing import Annotated, Any

import idna
from pydantic import BeforeValidator, WithJsonSchema

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


# Postfix and Dovecot keep sizes in signed 64-bit integers.
MAX_SIZE = 2**63 - 1


def parse_size(value: Any) -> int:
    """``25M`` → bytes (1024-based, as Postfix and Dovecot count). Plain integers are bytes."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size such as 25M or 2G, got {value!r}")
    if isinstance(value, int):
        number, unit = Decimal(value), ""
    elif isinstance(value, str) and (match := _SIZE.fullmatch(value)):
        # Decimal, not float: a float of a 400-digit number overflows (OverflowError, a traceback).
        number, unit = Decimal(match.group(1)), match.group(2).upper()
    else:
        raise ValueError(f"expected a size such as 25M or 2G (suffix K, M, G or T), got {value!r}")
    if number * _UNITS[unit] > MAX_SIZE:
        raise ValueError(f"size is beyond what Postfix and Dovecot count (8388608T), got {value!r}")
    size = int(number * _UNITS[unit])
    if size < 1:
        raise ValueError(f"size must be positive, got {value!r}")
    return size


def format_size(size: int) -> str:
    """Bytes → the shortest exact K/M/G form, for summaries and rendered configs."""
    for unit in ("T", "G", "M", "K"):
        if size % _UNITS[unit] == 0:
            return f"{size // _UNITS[unit]}{unit}"
    return str(size)


_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def parse_domain(value: Any) -> str:
    """A fully qualified domain name, lower-cased; internationalised names become A-labels."""
    if not isinstance(value, str):
        raise ValueError(f"expected a domain name, got {value!r}")
    name = value.strip().rstrip(".").lower()
    if not name.isascii():
        try:
            name = idna.encode(name, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise ValueError(f"{value!r} is not a valid internationalised domain name: {exc}") from exc
    labels = name.split(".")
    if len(labels) < 2 or len(name) > 253:
        raise ValueError(f"{value!r} is not a fully qualified domain name (like mail.example.org)")
    for label in labels:
        if not _LABEL.fullmatch(label):
            raise ValueError(
                f"{value!r} is not a valid domain name: label {label!r} must be 1-63 letters, "
                "digits or hyphens, not starting or ending with a hyphen"
            )
        if label.startswith("xn--"):
            _check_a_label(value, label)
    if labels[-1].isdigit():
        raise ValueError(f"{value!r} is not a domain name (its last label is numeric)")
    return name


def _check_a_label(value: str, label: str) -> None:
    """An ``xn--`` label must be the Punycode of a valid IDNA label: resolvers and TLS
    libraries refuse the others, so the site would validate here and fail in the wild."""
    try:
        idna.decode(label)
    except (idna.IDNAError, UnicodeError) as exc:
        raise ValueError(
            f"{value!r} is not a valid domain name: {label!r} is no valid A-label ({exc})"
        ) from None


# RFC 5322 dot-atom text; '+' is left out because it is the recipient delimiter.
_LOCAL_ATOM = r"[a-z0-9!#$%&'*/=?^_`{|}~-]+"
_LOCAL = re.compile(rf"^{_LOCAL_ATOM}(?:\.{_LOCAL_ATOM})*$")


def parse_address(value: Any) -> str:
    """An email address ``local@domain``, lower-cased, with an A-label domain."""
    if not isinstance(value, str):
        raise ValueError(f"expected an email address, got {value!r}")
    local, at, domain = value.strip().rpartition("@")
    if not at or not local:
        raise ValueError(f"{value!r} is not an email address (expected local@domain)")
    local = local.lower()
    if "+" in local:
        raise ValueError(
            f"{value!r}: '+' is the recipient delimiter (user+tag@) and cannot be part of an address"
        )
    if len(local) > 64 or not _LOCAL.fullmatch(local):
        raise ValueError(
            f"{value!r} has an invalid local part: use ASCII letters, digits and "
            "!#$%&'*/=?^_`{|}~- separated by single dots"
        )
    try:
        return f"{local}@{parse_domain(domain)}"
    except ValueError as exc:
        raise ValueError(f"{value!r} has an invalid domain: {exc}") from exc


def parse_ip(value: Any) -> str:
    """An IPv4 or IPv6 address, in its canonical text form."""
    if not isinstance(value, str):
        raise ValueError(f"expected an IP address, got {value!r}")
    try:
        return str(ipaddress.ip_address(value.strip().strip("[]")))
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 or IPv6 address") from None


def parse_host_address(value: Any) -> str:
    """Where to reach a server over SSH: an IP address or a host name."""
    try:
        return parse_ip(value)
    except ValueError:
        pass
    try:
        return parse_domain(value)
    except ValueError:
        raise ValueError(f"{value!r} is neither an IP address nor a host name") from None


# Dovecot password schemes mailstack accepts, with the crypt(3)/PHC form that follows the
# {SCHEME} prefix. https://doc.dovecot.org/2.4.1/core/config/auth/schemes.html
_B64 = r"[./0-9A-Za-z]"
_PHC = r"[A-Za-z0-9+/]"
HASH_FORMATS: dict[str, re.Pattern[str]] = {
    "ARGON2ID": re.compile(rf"^\$argon2id\$v=19\$m=\d+,t=\d+,p=\d+\${_PHC}+\${_PHC}+$"),
    "ARGON2I": re.compile(rf"^\$argon2i\$v=19\$m=\d+,t=\d+,p=\d+\${_PHC}+\${_PHC}+$"),
    "BLF-CRYPT": re.compile(rf"^\$2[abxy]?\$\d\d\${_B64}{{53}}$"),
    "SHA512-CRYPT": re.compile(rf"^\$6\$(?:rounds=\d+\$)?{_B64}{{1,16}}\${_B64}{{86}}$"),
    "SHA256-CRYPT": re.compile(rf"^\$5\$(?:rounds=\d+\$)?{_B64}{{1,16}}\${_B64}{{43}}$"),
}
_SCHEMED = re.compile(r"^\{([A-Z0-9.-]+)\}(.*)$", re.DOTALL)


def parse_password_hash(value: Any) -> str:
    """A Dovecot ``{SCHEME}hash`` of an accepted scheme, checked for its shape."""
    accepted = ", ".join(HASH_FORMATS)
    if not isinstance(value, str):
        raise ValueError(f"expected a password hash string like {{ARGON2ID}}$argon2id$…, got {value!r}")
    match = _SCHEMED.fullmatch(value.strip())
    if not match:
        raise ValueError(
            "password_hash must start with a Dovecot scheme prefix such as {ARGON2ID}; "
            "create one with `mailstack hash-password`"
        )
    scheme, digest = match.groups()
    if scheme not in HASH_FORMATS:
        raise ValueError(f"unsupported password scheme {{{scheme}}}; use one of {accepted}")
    if not HASH_FORMATS[scheme].fullmatch(digest):
        raise ValueError(
            f"this is not a well-formed {{{scheme}}} hash; create one with `mailstack hash-password`"
        )
    return f"{{{scheme}}}{digest}"


_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([smhd])\s*$", re.IGNORECASE)
_PERIOD_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate(value: Any) -> str:
    """``100/1h`` → ``100/1h``: a count per period (``s``, ``m``, ``h`` or ``d``; ``/h`` is ``/1h``)."""
    if isinstance(value, str) and (match := _RATE.fullmatch(value)):
        count, length, unit = int(match.group(1)), int(match.group(2) or 1), match.group(3).lower()
        if count < 1 or length < 1:
            raise ValueError(f"a rate needs a positive count and period, got {value!r}")
        if length * _PERIOD_SECONDS[unit] > 7 * 86400:
            raise ValueError(f"a rate's period can be at most 7d, got {value!r}")
        return f"{count}/{length}{unit}"
    raise ValueError(
        f"expected a rate such as 100/1h (a count, '/', a period in s, m, h or d), got {value!r}"
    )


_DURATION = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$", re.IGNORECASE)


def parse_duration(value: Any) -> int:
    """``10m`` → 600: a time in seconds, with an ``s``, ``m``, ``h`` or ``d`` suffix (or none: seconds)."""
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    elif isinstance(value, str) and (match := _DURATION.fullmatch(value)):
        seconds = int(match.group(1)) * _PERIOD_SECONDS[(match.group(2) or "s").lower()]
    else:
        raise ValueError(f"expected a duration such as 90s, 10m, 1h or 2d, got {value!r}")
    if seconds < 1:
        raise ValueError(f"a duration must be at least 1s, got {value!r}")
    return seconds


def parse_network(value: Any) -> str:
    """An IPv4 or IPv6 network in CIDR form (``192.0.2.0/24``); a bare address is a /32 or /128."""
    if not isinstance(value, str):
        raise ValueError(f"expected an address or network such as 192.0.2.0/24, got {value!r}")
    try:
        return str(ipaddress.ip_network(value.strip()))
    except ValueError as exc:
        try:
            loose = ipaddress.ip_network(value.strip(), strict=False)
        except ValueError:
            raise ValueError(f"{value!r} is not an IPv4 or IPv6 address or network ({exc})") from None
        raise ValueError(f"{value!r} has host bits set; did you mean {loose}?") from None


def rate_parts(rate: str) -> tuple[int, str]:
    """A normalised rate → (count, period): ``100/1h`` → (100, ``1h``)."""
    count, _, period = rate.partition("/")
    return int(count), period


def _text_or_count(pattern: str, description: str) -> WithJsonSchema:
    """The JSON Schema of a field written as text with a unit, or as a plain positive number."""
    return WithJsonSchema(
        {
            "anyOf": [{"type": "string", "pattern": pattern}, {"type": "integer", "minimum": 1}],
            "description": description,
        }
    )


Size = Annotated[
    int,
    BeforeValidator(parse_size),
    _text_or_count(
        r"^\s*\d+(\.\d+)?\s*[KMGTkmgt]?([iI]?[bB])?\s*$",
        "A size in bytes, or with a K, M, G or T suffix (1024-based): 25M, 2G.",
    ),
]
Rate = Annotated[
    str,
    BeforeValidator(parse_rate),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^\s*\d+\s*/\s*\d*\s*[smhdSMHD]\s*$",
            "description": "A count per period: 100/1h, 1000/1d, 10/5m.",
        }
    ),
]
Duration = Annotated[
    int,
    BeforeValidator(parse_duration),
    _text_or_count(
        r"^\s*\d+\s*[smhdSMHD]?\s*$",
        "A time in seconds, or with an s, m, h or d suffix: 90s, 10m, 1h, 2d.",
    ),
]
IPNetwork = Annotated[
    str,
    BeforeValidator(parse_network),
    WithJsonSchema(
        {"type": "string", "description": "An IPv4 or IPv6 address or network: 192.0.2.0/24, 2001:db8::/32."}
    ),
]


def parse_display_name(value: Any) -> Any:
    """A display name is one line of text: a control character (an escaped line break, say)
    would end the SQL row or break the XML profile it is written into."""
    if isinstance(value, str):
        bad = next((c for c in value if unicodedata.category(c) == "Cc"), None)
        if bad is not None:
            raise ValueError(f"a display name must not contain control characters (U+{ord(bad):04X})")
    return value


DisplayName = Annotated[
    str,
    BeforeValidator(parse_display_name),
    WithJsonSchema({"type": "string", "description": "Display name: one line, no control characters."}),
]
Domain = Annotated[
    str,
    BeforeValidator(parse_domain),
    WithJsonSchema({"type": "string", "format": "hostname", "description": "A domain name."}),
]
Address = Annotated[
    str,
    BeforeValidator(parse_address),
    WithJsonSchema({"type": "string", "pattern": "^[^@+]+@[^@]+$", "description": "local@domain"}),
]
IPAddress = Annotated[
    str,
    BeforeValidator(parse_ip),
    WithJsonSchema({"type": "string", "description": "An IPv4 or IPv6 address."}),
]
HostAddress = Annotated[
    str,
    BeforeValidator(parse_host_address),
    WithJsonSchema({"type": "string", "description": "An IP address or a host name."}),
]
PasswordHash = Annotated[
    str,
    BeforeValidator(parse_password_hash),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^\{(" + "|".join(HASH_FORMATS) + r")\}\$",
            "description": "A Dovecot password hash with its scheme prefix; "
            "make one with `mailstack hash-password`.",
        }
    ),
]


def _one_or_many(value: Any) -> Any:
    return (value,) if isinstance(value, str) else value


def _one_or_many_schema(item: dict[str, Any], description: str) -> WithJsonSchema:
    many = {"type": "array", "items": item, "minItems": 1}
    return WithJsonSchema({"anyOf": [item, many], "description": description})


IPAddresses = Annotated[
    tuple[IPAddress, ...],
    BeforeValidator(_one_or_many),
    _one_or_many_schema({"type": "string"}, "Address, or list of addresses, the published ports listen on."),
]
Addresses = Annotated[
    tuple[Address, ...],
    BeforeValidator(_one_or_many),
    _one_or_many_schema({"type": "string", "pattern": "^[^@+]+@[^@]+$"}, "Address or list of addresses."),
]
