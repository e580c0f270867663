"""The `mailstack` command line: each command parses its options, calls one library function
and prints its typed result (cli/show.py). Errors become messages here, once (options.user_errors)."""

from __future__ import annotations

from typing import Annotated

import typer

from mailstack import __version__
from mailstack.cli import backup_commands, host_commands, password_commands, site_commands, stack_commands

app = typer.Typer(
    name="mailstack",
    help="Run your own mail server from one typed site description.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
images_app = typer.Typer(help="Build the service images.", no_args_is_help=True)
tls_app = typer.Typer(
    help="The site's certificates: what is served, and ACME renewals (tls.mode acme).", no_args_is_help=True
)
vault_app = typer.Typer(
    help="Encrypt the state for git with ansible-vault, or decrypt it.", no_args_is_help=True
)
app.add_typer(images_app, name="images")
app.add_typer(tls_app, name="tls")
secret_app = typer.Typer(
    help="Secrets you were given (vendor keys), kept in the state.", no_args_is_help=True
)
app.add_typer(vault_app, name="vault")
app.add_typer(secret_app, name="secret")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mailstack {__version__}")
        raise typer.Exit


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Run your own mail server from one typed site description."""


# In the order `mailstack --help` lists them.
app.command()(site_commands.init)
app.command()(site_commands.validate)
app.command()(site_commands.render)
app.command("dns")(site_commands.dns)
app.command("hash-password")(site_commands.hash_password_command)
app.command()(password_commands.password)
app.command()(password_commands.recover)
app.command("recovery-key")(password_commands.recovery_key)
app.command()(stack_commands.up)
app.command("check")(host_commands.check)
app.command()(stack_commands.down)
app.command()(stack_commands.status)
app.command()(stack_commands.logs)
app.command()(host_commands.deploy)
app.command()(stack_commands.probe)
app.command()(host_commands.audit)
app.command()(backup_commands.backup)
app.command()(backup_commands.restore)
images_app.command("build")(stack_commands.images_build)
app.command()(stack_commands.purge)
vault_app.command("encrypt")(site_commands.vault_encrypt)
vault_app.command("decrypt")(site_commands.vault_decrypt)
secret_app.command("set")(site_commands.secret_set)
tls_app.command("status")(host_commands.tls_status)
tls_app.command("renew")(host_commands.tls_renew)
app.command()(site_commands.schema)

__all__ = ["app"]
