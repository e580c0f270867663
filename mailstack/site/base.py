"""The base of every model of the site description."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Model(BaseModel):
    # extra=forbid: a misspelt key in the site file is an error, never silently ignored;
    # frozen: a loaded site is a value that rendering cannot change behind the loader's back.
    model_config = ConfigDict(extra="forbid", frozen=True)
