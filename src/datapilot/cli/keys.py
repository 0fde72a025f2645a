"""``datapilot keys``: tenants' API keys and token budgets, in ``DATAPILOT_HOME/keys.db``.

Works on the home folder directly (no server needed); a running server sees a new or revoked key on
its next request.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.table import Table

from datapilot.cli._common import ConfigOpt, HomeOpt, ProfileOpt, out, settings_from
from datapilot.core.keys import KeyStore

keys_app = typer.Typer(help="Tenants' API keys (hashed at rest) and token budgets.", no_args_is_help=True)

_SCOPE_HELP = "comma-separated names it may use (default: all)"


@contextmanager
def _store(config: ConfigOpt, profile: ProfileOpt, home: HomeOpt) -> Iterator[KeyStore]:
    with KeyStore.for_home(settings_from(config, profile, home).home) as store:
        yield store


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option("--tenant", "-t", help="the tenant the key belongs to")],
    name: Annotated[str, typer.Option("--name", "-n", help="what the key is for")] = "",
    level: Annotated[str, typer.Option("--level", help="read, write or admin")] = "write",
    models: Annotated[str | None, typer.Option("--models", help=f"models {_SCOPE_HELP}")] = None,
    datasources: Annotated[str | None, typer.Option("--datasources", help=f"data sources {_SCOPE_HELP}")] = None,
    spaces: Annotated[str | None, typer.Option("--spaces", help=f"knowledge spaces {_SCOPE_HELP}")] = None,
    flows: Annotated[str | None, typer.Option("--flows", help=f"flows {_SCOPE_HELP}")] = None,
    cache: Annotated[str | None, typer.Option("--cache", help=f"cache scopes (models) {_SCOPE_HELP}")] = None,
    rpm: Annotated[int | None, typer.Option("--rpm", min=1, help="requests per minute (model calls)")] = None,
    tpm: Annotated[int | None, typer.Option("--tpm", min=1, help="model tokens per minute")] = None,
    expires_days: Annotated[float | None, typer.Option("--expires-days", min=0.001)] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    home: HomeOpt = None,
) -> None:
    """Create a key; it is printed once and only its hash is kept."""
    scopes = {
        kind: names
        for kind, names in (
            ("models", models),
            ("datasources", datasources),
            ("spaces", spaces),
            ("flows", flows),
            ("cache", cache),
        )
        if names is not None
    }
    with _store(config, profile, home) as store:
        record, key = store.create(
            tenant,
            name=name,
            level=level,
            scopes=scopes,
            rpm=rpm,
            tpm=tpm,
            expires_in_s=expires_days * 86400 if expires_days else None,
        )
    if as_json:
        print(json.dumps({**record.to_dict(), "key": key}))
        return
    out.print(f"created key [bold]{record.id}[/] for tenant [bold]{tenant}[/] ({level})")
    out.print("the key (shown once, keep it safe):")
    print(key)


@keys_app.command("list")
def keys_list(
    tenant: Annotated[str | None, typer.Option("--tenant", "-t")] = None,
    all_: Annotated[bool, typer.Option("--all", help="revoked keys too")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    home: HomeOpt = None,
) -> None:
    """List keys (never their secrets)."""
    with _store(config, profile, home) as store:
        keys = store.keys(tenant, include_revoked=all_)
    if as_json:
        print(json.dumps([k.to_dict() for k in keys]))
        return
    table = Table("id", "tenant", "name", "level", "scopes", "rpm", "tpm", "created", "state")
    for k in keys:
        scopes = "; ".join(f"{kind}: {','.join(names)}" for kind, names in k.scopes.items()) or "all"
        state = "active" if k.active else ("revoked" if k.revoked_at else "expired")
        created = time.strftime("%Y-%m-%d %H:%M", time.gmtime(k.created_at))
        table.add_row(k.id, k.tenant, k.name, k.level, scopes, str(k.rpm or "-"), str(k.tpm or "-"), created, state)
    out.print(table)
    if not keys:
        out.print("no keys" + (f" for tenant {tenant}" if tenant else "") + ": create one with `datapilot keys create`")


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="the key's id, as `datapilot keys list` shows it")],
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    home: HomeOpt = None,
) -> None:
    """Revoke a key: refused from the next request on."""
    with _store(config, profile, home) as store:
        record = store.revoke(key_id)
    out.print(f"revoked key {record.id} of tenant {record.tenant}")


@keys_app.command("budget")
def keys_budget(
    tenant: Annotated[str, typer.Argument(help="the tenant")],
    daily_tokens: Annotated[int | None, typer.Option("--daily-tokens", min=0)] = None,
    monthly_tokens: Annotated[int | None, typer.Option("--monthly-tokens", min=0)] = None,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    home: HomeOpt = None,
) -> None:
    """Set a tenant's token budgets (UTC days and months); without options, clear them."""
    with _store(config, profile, home) as store:
        budget = store.set_budget(tenant, daily_tokens=daily_tokens, monthly_tokens=monthly_tokens)
    out.print(
        f"tenant {tenant}: daily {budget.daily_tokens or 'unlimited'}, monthly {budget.monthly_tokens or 'unlimited'}"
    )
