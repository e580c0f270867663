"""`mailstack init`: a commented starter site with a first mailbox and a fresh password."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from mailstack.errors import UserError
from mailstack.passwords import generate_password, hash_password
from mailstack.render.environment import environment
from mailstack.site.fields import parse_domain
from mailstack.site.loader import parse_site
from mailstack.site.schema import SCHEMA_RELPATH, write_schema


@dataclass(frozen=True)
class Starter:
    path: Path
    address: str
    password: str  # shown once to the person running init, never stored


def site_id_for(domain: str) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", domain.lower()).strip("-")
    return slug[:40].rstrip("-") or "site"


def create_starter(domain: str, path: Path, *, user: str = "admin", force: bool = False) -> Starter:
    try:
        name = parse_domain(domain)
    except ValueError as exc:
        raise UserError(f"DOMAIN: {exc}") from None
    if path.is_dir():
        raise UserError(f"{path} is a directory; give the site file's name, such as {path}/site.yaml")
    if path.exists() and not force:
        raise UserError(f"{path} already exists; pass --force to overwrite it")
    password = generate_password()
    text = (
        environment()
        .get_template("init/site.yaml.j2")
        .render(
            domain=name,
            user=user,
            site_id=site_id_for(name),
            password_hash=hash_password(password),
            file_name=path.name,
            schema_path=SCHEMA_RELPATH,
        )
    )
    parse_site(text, source=str(path))  # a starter that does not validate is a bug
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    write_schema(path.parent / SCHEMA_RELPATH)
    return Starter(path=path, address=f"{user}@{name}", password=password)
