"""``regionguard config check --config FILE [--connect]``: every problem of a config, one line each.

Offline: the YAML, the references (``${env:...}``, ``${file:...}``), the pydantic models (every
field error, not only the first), the names across sections (fallbacks, allowed_regions,
redis.region: the models' own rules) and each DSN's shape (asyncpg takes ``postgresql://`` URLs
only). A DSN without ``sslmode`` is a warning, not a problem. With ``--connect`` it also asks
Kafka (metadata; the existing topics agree with the config; the missing ones could be created,
asked with ``validate_only``) and every region's PostgreSQL (connect; the inbox table exists or
may be created; every table the region may hold exists, with its key, version and listed
columns), each target within ``--timeout`` seconds; and warns when brokers have racks but the
consumers of a router or replayer serving ``--regions`` would fetch across regions, or a writes or
held topic's replicas do not span two racks (core/racks.py).

Exit 0 when there is no problem, 2 otherwise; never a traceback. Nothing here changes anything.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import urllib.parse

from pydantic import ValidationError

from ..core.config import Config, ConfigError, error_line, read_yaml, statement_cache_size, with_env_overrides
from ..core.dsn import dsn_host, tls_warnings
from ..core.log import RedactingFilter, add_secrets, scrub
from ..core.racks import startup_rack_report
from ..core.refs import resolve
from ..core.sql import COLUMNS_QUERY, INBOX_TABLE

SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="config_command", metavar="ACTION")
    sub.required = True
    ck = sub.add_parser("check", help="validate a config; with --connect, against Kafka and every region too",
                        description="Validate a config file, one line per problem (exit 0 or 2).")
    ck.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                    help="YAML config (default: $REGIONGUARD_CONFIG)")
    ck.add_argument("--connect", action="store_true",
                    help="also reach Kafka and every region's PostgreSQL (read only)")
    ck.add_argument("--timeout", type=float, default=5.0, metavar="S",
                    help="seconds allowed to each target with --connect (default 5)")
    ck.add_argument("--json", action="store_true",
                    help="one JSON object: config, ok, problems, warnings, connect")
    ck.add_argument("--regions", metavar="R1,R2",
                    help="with --connect: warn if a router or replayer serving these regions (default: all) "
                         "would fetch across regions (kafka.client_rack, docs/topology.md)")


def dsn_problem(dsn: str) -> str | None:
    """What asyncpg would refuse in this DSN's shape, without connecting; None when it looks right."""
    if "://" not in dsn:
        return "is not a postgresql:// URL (asyncpg takes URL DSNs only)"
    try:
        url = urllib.parse.urlsplit(dsn)
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if url.scheme not in ("postgresql", "postgres"):
        return f"scheme {url.scheme!r} is not postgresql:// or postgres://"
    hosts = url.netloc.rpartition("@")[2]
    for hp in filter(None, hosts.split(",")):
        port = hp.rpartition("]")[2].rpartition(":")[2] if ":" in hp.rpartition("]")[2] else ""
        if port and not port.isdigit():
            return f"port {port!r} is not a number"
    query = urllib.parse.parse_qs(url.query)
    for mode in query.get("sslmode", []):
        if mode not in SSLMODES:
            return f"sslmode {mode!r} is not one of {', '.join(SSLMODES)}"
    return None


def offline(path: str | None) -> tuple[Config | None, list[str], list[str]]:
    """The config (None if it is not valid), its problems and its warnings."""
    try:
        _, data = read_yaml(path)
    except ConfigError as exc:
        return None, [str(exc)], []
    if not isinstance(data, dict):
        return None, ["expected a mapping at the top level"], []
    problems: list[str] = []
    resolved = resolve(data, errors=problems)  # an unresolved value stays as written: the rest is still checked
    add_secrets(resolved.secrets)
    regions = resolved.data.get("regions")
    for name, region in (regions.items() if isinstance(regions, dict) else ()):
        if not isinstance(region, dict):
            continue
        replicas = region.get("read_replicas") or []
        dsns = [("dsn", region.get("dsn")), *((f"read_replicas[{i}]", d) for i, d in enumerate(replicas))]
        for field, dsn in dsns:
            why = dsn_problem(dsn) if isinstance(dsn, str) else None  # not a string: the model says so
            if why:
                problems.append(f"regions.{name}.{field}: {why}")
    try:
        cfg = with_env_overrides(Config.model_validate(resolved.data))
    except ValidationError as exc:
        return None, problems + [scrub(error_line(e)) for e in exc.errors()], []
    return cfg, problems, tls_warnings(cfg.regions)


def _why(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return scrub(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


def kafka_problems(cfg: Config, timeout: float) -> list[str]:
    """Blocking: metadata, the existing topics checked, the missing ones created with validate_only."""
    from confluent_kafka.admin import AdminClient, NewTopic

    from ..core.kafka import TopicMismatchError, check_topics, topic_configs, topic_plan

    admin = AdminClient(cfg.kafka_client_conf())
    try:
        md = admin.list_topics(timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - every failure is one line
        return [f"kafka: no metadata from {cfg.kafka.bootstrap} within {timeout:g} s ({_why(exc)})"]
    problems = []
    plan, configs = topic_plan(cfg), topic_configs(cfg)
    try:
        check_topics(cfg, admin, names=[n for n in plan if n in md.topics], timeout=timeout, metadata=md)
    except TopicMismatchError as exc:
        problems.append(f"kafka: {exc}")
    missing = [NewTopic(n, parts, cfg.kafka.replication_factor, config=configs[n])
               for n, (parts, _compacted) in plan.items() if n not in md.topics]
    if missing:
        futs = admin.create_topics(missing, validate_only=True, request_timeout=timeout)
        for name, fut in futs.items():
            try:
                fut.result(timeout=timeout)
            except Exception as exc:  # noqa: BLE001
                problems.append(f"kafka: topic {name} is missing and cannot be created ({_why(exc)})")
    return problems


async def _region_problems(cfg: Config, region: str, timeout: float) -> list[str]:
    import asyncpg

    dsn = cfg.regions[region].dsn
    try:
        conn = await asyncpg.connect(dsn, timeout=timeout, command_timeout=timeout,
                                     statement_cache_size=statement_cache_size(cfg, region))
    except Exception as exc:  # noqa: BLE001
        return [f"region {region}: cannot connect to {dsn_host(dsn)} ({_why(exc)})"]
    problems = []
    try:
        if not await conn.fetch(COLUMNS_QUERY, INBOX_TABLE):
            if not await conn.fetchval("SELECT has_schema_privilege(current_schema(), 'CREATE')"):
                problems.append(f"region {region}: inbox table {INBOX_TABLE} is missing and this user may not "
                                "create it in the current schema")
        for name, table in cfg.tables.items():
            if not cfg.allowed_in(name, region):
                continue  # data residency: this region never holds the table
            cols = {r["column_name"] for r in await conn.fetch(COLUMNS_QUERY, name)}
            if not cols:
                problems.append(f"region {region}: table {name} does not exist")
                continue
            wanted = [*table.key, *([table.version] if table.version else []), *(table.columns or ())]
            for col in dict.fromkeys(wanted):
                if col not in cols:
                    problems.append(f"region {region}: table {name} has no column {col}")
    finally:
        conn.terminate()
    return problems


async def region_problems(cfg: Config, region: str, timeout: float) -> list[str]:
    """One region's problems, within ``timeout`` seconds."""
    try:
        return await asyncio.wait_for(_region_problems(cfg, region, timeout), timeout)
    except (asyncio.TimeoutError, TimeoutError):
        return [f"region {region}: no answer from {dsn_host(cfg.regions[region].dsn)} within {timeout:g} s"]
    except Exception as exc:  # noqa: BLE001
        return [f"region {region}: {_why(exc)}"]


async def online(cfg: Config, timeout: float) -> list[str]:
    """Kafka and every region, side by side (each bounded), problems in a stable order."""
    kafka = asyncio.to_thread(kafka_problems, cfg, timeout)
    results = await asyncio.gather(kafka, *(region_problems(cfg, r, timeout) for r in cfg.regions))
    return [line for lines in results for line in lines]


def main(args: argparse.Namespace) -> int:
    # librdkafka's reconnect lines say nothing a problem line doesn't; topic warnings still show
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("warning: %(message)s"))
    handler.addFilter(RedactingFilter())
    logging.getLogger().handlers[:] = [handler]
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("regionguard.rdkafka").setLevel(logging.CRITICAL)
    if args.timeout <= 0:
        print("regionguard config check: --timeout must be positive", file=sys.stderr)
        return 2
    cfg, problems, warnings = offline(args.config)
    if cfg is not None and args.connect and not problems:
        try:
            problems += asyncio.run(online(cfg, args.timeout))
            if not problems:  # racks: warnings only, on a cluster that answered
                regions = [r.strip() for r in args.regions.split(",")] if args.regions else list(cfg.regions)
                problems += [f"--regions: {r} is not a region of the config" for r in regions
                             if r not in cfg.regions]
                if not problems:
                    warnings += startup_rack_report(cfg, service="router/replayer", regions=regions,
                                                    timeout=args.timeout).lines()
        except Exception as exc:  # noqa: BLE001 - the command's promise: one line, never a traceback
            problems.append(_why(exc))
    source = args.config or "$REGIONGUARD_CONFIG"
    if args.json:
        print(json.dumps({"config": source, "ok": not problems, "connect": args.connect,
                          "problems": [scrub(x) for x in problems], "warnings": [scrub(x) for x in warnings]}))
        return 2 if problems else 0
    for line in warnings:
        print(f"{source}: warning: {scrub(line)}")
    for line in problems:
        line = scrub(line)
        print(line if line.startswith(f"{source}: ") else f"{source}: {line}")
    if problems:
        return 2
    what = "Kafka and every region answered" if args.connect else "offline checks only"
    print(f"{source}: OK ({len(cfg.regions)} regions, {len(cfg.tables)} tables; {what})")
    return 0


__all__ = ["add_arguments", "dsn_problem", "main", "offline", "online"]
