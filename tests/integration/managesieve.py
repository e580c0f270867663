"""A small ManageSieve client (RFC 5804): enough to STARTTLS, authenticate and install a script."""

from __future__ import annotations

import base64
import re
import socket
import ssl
from dataclasses import dataclass

_LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n$")


class ManageSieveError(Exception):
    """The server answered NO or BYE, or broke the protocol."""


@dataclass(frozen=True)
class Response:
    status: str  # OK, NO or BYE
    text: str  # the rest of the status line (response code and human text)
    lines: list[str]  # the data lines before it (capabilities, script list, …)


class ManageSieve:
    def __init__(self, host: str, port: int, *, timeout: float = 30) -> None:
        self.sock: socket.socket = socket.create_connection((host, port), timeout=timeout)
        self.file = self.sock.makefile("rb")
        self.greeting = self.read_response()
        self.capabilities = capabilities(self.greeting)

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def _line(self) -> bytes:
        """One logical line, with any {N} literals in it read inline."""
        out = b""
        while True:
            chunk = self.file.readline(65536)
            if not chunk:
                raise ManageSieveError(f"connection closed by the server (after {out!r})")
            literal = _LITERAL.search(chunk)
            if literal is None:
                return out + chunk.rstrip(b"\r\n")
            out += chunk[: literal.start()] + self.file.read(int(literal.group(1)))

    def read_response(self) -> Response:
        lines: list[str] = []
        while True:
            line = self._line().decode("utf-8", "replace")
            word = line.split(" ", 1)[0].upper()
            if word in ("OK", "NO", "BYE"):
                return Response(word, line[len(word) :].strip(), lines)
            lines.append(line)

    def command(self, line: bytes) -> Response:
        self.sock.sendall(line + b"\r\n")
        return self.read_response()

    def ok(self, line: bytes) -> Response:
        response = self.command(line)
        if response.status != "OK":
            raise ManageSieveError(f"{line.split(b' ', 1)[0].decode()}: {response.status} {response.text}")
        return response

    def starttls(self, context: ssl.SSLContext, server_hostname: str | None = None) -> None:
        self.ok(b"STARTTLS")
        self.file.close()
        self.sock = context.wrap_socket(self.sock, server_hostname=server_hostname)
        self.file = self.sock.makefile("rb")
        # RFC 5804 2.2: the server sends its capabilities again after the handshake.
        self.capabilities = capabilities(self.read_response())

    def authenticate_plain(self, user: str, password: str) -> Response:
        secret = base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode("utf-8"))
        return self.command(b'AUTHENTICATE "PLAIN" "' + secret + b'"')

    def putscript(self, name: str, script: str) -> None:
        data = script.encode("utf-8")
        self.ok(b'PUTSCRIPT "' + name.encode() + b'" {' + str(len(data)).encode() + b"+}\r\n" + data)

    def setactive(self, name: str) -> None:
        self.ok(b'SETACTIVE "' + name.encode() + b'"')

    def listscripts(self) -> list[str]:
        return self.ok(b"LISTSCRIPTS").lines

    def logout(self) -> None:
        try:
            self.command(b"LOGOUT")
        except (ManageSieveError, OSError):
            pass
        finally:
            self.close()


def capabilities(response: Response) -> dict[str, str]:
    """'"SASL" "PLAIN LOGIN"' lines → {"SASL": "PLAIN LOGIN"}."""
    caps = {}
    for line in response.lines:
        parts = re.findall(r'"((?:[^"\\]|\\.)*)"', line)
        if parts:
            caps[parts[0].upper()] = parts[1] if len(parts) > 1 else ""
    return caps
