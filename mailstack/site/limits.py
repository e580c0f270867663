"""limits: message size, outbound rates, and Postfix's limits per client address."""

from __future__ import annotations

from pydantic import Field

from mailstack.site.base import Model
from mailstack.site.fields import Rate, Size


class ClientLimits(Model):
    """Postfix anvil limits per client address, on 25, 587 and 465; rates count per minute.
    https://www.postfix.org/TUNING_README.html#conn_limit"""

    connections: int = Field(default=20, ge=1, description="Simultaneous connections per client address.")
    connection_rate: int = Field(
        default=60, ge=1, description="New connections per client address and minute."
    )
    message_rate: int = Field(
        default=100, ge=1, description="Messages (MAIL FROM) per client address and minute."
    )
    auth_rate: int = Field(default=20, ge=1, description="AUTH commands per client address and minute.")


class Limits(Model):
    message_size: Size = Field(default=25 * 1024**2, description="Largest accepted message.")
    send_rate: Rate | None = Field(
        default="100/1h",
        description=(
            "Outbound limit of each authenticated user, in recipients per period (Rspamd "
            "ratelimit; over it, submission answers 4xx). A mailbox's send_rate overrides it; "
            "null: no site-wide limit."
        ),
    )
    clients: ClientLimits = Field(default_factory=ClientLimits)
