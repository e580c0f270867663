"""One HTTP(S) request to a published port, with the Host a client would send."""

from __future__ import annotations

import http.client
import ssl

from mailstack.check.transport import TIMEOUT, Endpoint


def http_request(
    endpoint: Endpoint,
    context: ssl.SSLContext | None,
    host: str,
    path: str,
    body: str | None = None,
    *,
    method: str | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """(status, lower-cased headers, body). Plain HTTP without ``context``; POST of XML with
    ``body``, else GET, unless ``method`` says otherwise."""
    connection: http.client.HTTPConnection
    if context is None:
        connection = http.client.HTTPConnection(endpoint.host, endpoint.port, timeout=TIMEOUT)
    else:
        connection = http.client.HTTPSConnection(
            endpoint.host, endpoint.port, timeout=TIMEOUT, context=context
        )
    try:
        headers = {"Host": host}
        if body is not None:
            headers["Content-Type"] = "text/xml"
        verb = method or ("POST" if body is not None else "GET")
        connection.request(verb, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()
