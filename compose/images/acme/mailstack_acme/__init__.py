"""mailstack-acme: the site's certificates from an ACME CA (tls.mode acme, issue #7).

    mailstack-acme serve CONFIG            issue, renew and retry for as long as it runs
    mailstack-acme renew CONFIG [--force]  one attempt now (--force: renew what is valid)
    mailstack-acme health CONFIG           the configuration loads and the state is writable

Why Debian's python3-acme (certbot's protocol library) rather than certbot or lego: the
certificates must be for keys made ahead and pinned in DNS (TLSA 3 1 1), for ECDSA and RSA
at once, with the stack's own schedule, back-off and status file. A client library does
exactly the protocol; a CLI client would own the keys and the schedule. The library (4.0)
has no ARI yet, so the renewalInfo lookup (RFC 9773) is done here with its HTTP session.

State (the site's state directory's acme/, bind-mounted at state_dir):
    account.key            the account's key (made by the renderer)
    keys/<kind>-NNNN.key   server keys by generation; the renderer makes 0001 and 0002
    tls/live/<kind>.{key,crt,pem}  served: key, chain, key + chain (Postfix reads the latter,
                           so that a new smtpd never sees a key without its certificate)
    tls/live/serial        rewritten last on every switch; the services reload when it changes
    status.json            certificates, last attempt, failures and the next retry
A renewal switches to the next key generation (published in DNS ahead by `mailstack dns`)
and makes the one after it; a first issuance or a change of names keeps the key in use.

Modules: cli (the commands), config, schedule (wake-ups, attempts and back-off), due (what
is due and when), ari (RFC 9773 renewal windows), protocol (one order with python3-acme),
store (the state files), keys, clock. The image installs this package in
/usr/local/lib/mailstack-acme and launcher.py as the command /usr/local/bin/mailstack-acme.
"""
