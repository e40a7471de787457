"""``regionguard grants``: the PostgreSQL roles and grants each service needs, per region (issue 28).

Prints one SQL script per region, to run as the tables' owner in that region's
database (``psql -v ON_ERROR_STOP=1 -d <region's database> -f``). What each
service runs, and so what it is granted (docs/grants.md says why, line by line):

* **router** (:mod:`regionguard.core.db`, :mod:`regionguard.core.inbox`):
  ``SELECT, INSERT, UPDATE, DELETE`` on every allow-listed table the region may
  hold (upserts read the version column, deletes join on the key, the Redis
  write-through reads rows back); on the inbox ``SELECT, INSERT, DELETE`` (claim
  with ``RETURNING``, release of dead-lettered writes, pruning); on the
  tombstones ``SELECT, INSERT, UPDATE, DELETE`` (read by inserts, raised by
  deletes with ``ON CONFLICT DO UPDATE``, pruned);
* **replayer**: the router's, less ``DELETE`` on the tombstones (it does not prune);
* **health**: ``CONNECT`` only: its probe runs ``SELECT 1`` and a ``DO`` block
  reading ``pg_is_in_recovery()`` and a setting (plpgsql is usable by PUBLIC);
* **reader** (:mod:`regionguard.client.reader` and the read-your-writes check of
  :mod:`regionguard.client.consistency`): ``SELECT`` on the tables and the inbox.

Every role gets ``CONNECT`` on the database and (but health) ``USAGE`` on the
schema. The inbox and tombstone tables are created by the script, as their
owner: a service creates them only when they are missing, which needs
``CREATE`` on the schema, and the least-privilege roles have none.

Tables outside a region's ``allowed_regions`` get no grant there. Identifiers
come from the config's allow-list and go through
:func:`regionguard.core.sql.quote_ident`; nothing of a DSN is printed (the
database is ``current_database()`` where the script runs). Written by hand:
the privileges follow our own statements, which no library knows.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from dataclasses import dataclass

from ..core.config import Config, UsageError, load_config
from ..core.sql import INBOX_DDL, INBOX_TABLE, TOMBSTONE_TABLE, UnsafeIdentifier, quote_ident
from .regionargs import chosen_regions

SERVICES = ("router", "replayer", "health", "reader")
DEFAULT_ROLES = {s: f"regionguard_{s}" for s in SERVICES}

WRITE = ("SELECT", "INSERT", "UPDATE", "DELETE")


@dataclass(frozen=True)
class Needs:
    """What one service needs in one region's database."""

    tables: tuple[str, ...] = ()       # privileges on every allow-listed table the region may hold
    inbox: tuple[str, ...] = ()        # on regionguard_applied
    tombstones: tuple[str, ...] = ()   # on regionguard_tombstones
    schema_usage: bool = True


NEEDS: Mapping[str, Needs] = {
    "router": Needs(WRITE, ("SELECT", "INSERT", "DELETE"), WRITE),
    "replayer": Needs(WRITE, ("SELECT", "INSERT", "DELETE"), ("SELECT", "INSERT", "UPDATE")),
    "health": Needs(schema_usage=False),
    "reader": Needs(("SELECT",), ("SELECT",)),
}


def region_tables(cfg: Config, region: str) -> list[str]:
    """The allow-listed tables ``region`` may hold (data residency), in config order."""
    return [t for t in cfg.tables if cfg.allowed_in(t, region)]


def grant_statements(cfg: Config, region: str, roles: Mapping[str, str], *, schema: str = "public",
                     services: tuple[str, ...] = SERVICES) -> list[str]:
    """The statements of ``region``'s script for ``services`` (pure: no I/O)."""
    sch = quote_ident(schema)
    names = {s: quote_ident(roles[s]) for s in services}
    out = [f"-- regionguard grants for region {region}: run as the owner of its tables, in its database",
           f"SET search_path TO {sch};",
           "-- the inbox and the tombstones, created here by their owner (the roles below may not create)",
           INBOX_DDL.strip() + ";"]
    for s in services:
        out.append(f"DO $rg$ BEGIN CREATE ROLE {names[s]} LOGIN; "
                   f"EXCEPTION WHEN duplicate_object THEN NULL; END $rg$;  -- {s}; set its password yourself")
    everyone = ", ".join(names[s] for s in services)
    out.append(f"DO $rg$ BEGIN EXECUTE format('GRANT CONNECT ON DATABASE %I TO {everyone}', "
               f"current_database()); END $rg$;")
    tables = region_tables(cfg, region)
    qualified = ", ".join(f"{sch}.{quote_ident(t)}" for t in tables)
    for s in services:
        need, role = NEEDS[s], names[s]
        why = ": CONNECT only (above): its probe runs SELECT 1 and a DO block" if s == "health" else ""
        out.append(f"-- {s}{why}")
        if need.schema_usage:
            out.append(f"GRANT USAGE ON SCHEMA {sch} TO {role};")
        if need.tables and tables:
            out.append(f"GRANT {', '.join(need.tables)} ON TABLE {qualified} TO {role};")
        if need.inbox:
            out.append(f"GRANT {', '.join(need.inbox)} ON TABLE {sch}.{quote_ident(INBOX_TABLE)} TO {role};")
        if need.tombstones:
            out.append(f"GRANT {', '.join(need.tombstones)} ON TABLE {sch}.{quote_ident(TOMBSTONE_TABLE)} "
                       f"TO {role};")
    return out


def parse_roles(pairs: list[str] | None) -> dict[str, str]:
    """``["router=app_router"]`` over the defaults; a bad pair is a :class:`UsageError`."""
    roles = dict(DEFAULT_ROLES)
    for pair in pairs or ():
        service, sep, name = pair.partition("=")
        if not sep or service not in SERVICES:
            raise UsageError(f"--role {pair!r}: expected SERVICE=ROLE with SERVICE one of {', '.join(SERVICES)}")
        roles[service] = name
    for service, name in roles.items():
        try:
            quote_ident(name)
        except UnsafeIdentifier:
            raise UsageError(f"--role {service}={name!r}: not a plain SQL identifier") from None
    return roles


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--region", action="append", metavar="R",
                   help="only this region (repeatable; default: every configured region)")
    p.add_argument("--service", action="append", choices=SERVICES,
                   help="only this service's role (repeatable; default: all four)")
    p.add_argument("--role", action="append", metavar="SERVICE=ROLE",
                   help="role name of a service (default: regionguard_<service>)")
    p.add_argument("--schema", default="public", help="schema of the tables (default: public)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per region: region, roles, statements (the SQL lines)")


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    regions = chosen_regions(cfg, args.region)
    try:
        quote_ident(args.schema)
    except UnsafeIdentifier:
        raise UsageError(f"--schema {args.schema!r}: not a plain SQL identifier") from None
    roles = parse_roles(args.role)
    services = tuple(s for s in SERVICES if s in (args.service or SERVICES))
    for i, region in enumerate(regions):
        lines = grant_statements(cfg, region, roles, schema=args.schema, services=services)
        if args.json:
            print(json.dumps({"region": region, "roles": {s: roles[s] for s in services}, "statements": lines}))
            continue
        if i:
            print()
        print("\n".join(lines))
    return 0
