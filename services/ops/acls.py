"""``regionguard acls``: the least Kafka ACLs each principal needs; printed, or applied with ``--apply``.

One principal per service (router, replayer, health, features), one for
operators and one (or more) for applications, named in ``kafka.principals``
or with ``--principal ROLE=User:NAME``. :func:`acl_table` is the table, pure:
names come from the config (``kafka.topic_prefix``, the regions, the groups),
so what is printed is what is applied. docs/security.md explains every row
and what each write it leaves out would have allowed.

Written by hand because the table is ours (which service reads and writes
what); granting is confluent-kafka's AdminClient (CreateAcls). Kafka's
CreateAcls adds an existing binding as a no-op, but ``--apply`` reads the
principals' ACLs first and creates only the missing ones, so a second run
says "0 added". It never deletes an ACL: removing an extra grant is the
operator's decision.

One grant is wider than one service's own traffic, on purpose:

- DESCRIBE (metadata) and DESCRIBE_CONFIGS (topic settings) on every
  regionguard topic for every service: each service checks the whole topic
  layout at start (``core.kafka.ensure_topics``) and would take a topic it
  cannot see for a missing one. Neither reveals a record.

Only operators write ``rg.control``, where the health leader takes breaker
commands from: the replayer's readiness and "drained" markers go to
``rg.failover-events`` (they went to ``rg.control``, and Kafka ACLs cannot tell
record kinds apart, so the replayer's principal could have forced a breaker).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field

from ..core.config import Config, UsageError, load_config, parse_principal
from ..core.kafka import replayer_group, router_group, topic_plan

ROLES = ("router", "replayer", "health", "features", "operator", "applications")


@dataclass(frozen=True, order=True)
class Grant:
    """One ALLOW binding: ``principal`` may ``operation`` on ``resource`` ``name`` (``pattern``: literal|prefixed)."""

    principal: str
    resource: str  # topic | group | cluster
    name: str
    pattern: str
    operation: str  # Kafka's AclOperation name: READ, WRITE, DESCRIBE, DESCRIBE_CONFIGS, CREATE
    why: str = field(default="", compare=False)

    def line(self) -> str:
        where = f"{self.resource}:{self.name}" + ("*" if self.pattern == "prefixed" else "")
        return f"{self.principal:<24} ALLOW {self.operation:<16} {where:<40} {self.why}"


def faust_leader_topic(cfg: Config) -> str:
    """The topic faust's leader election uses (``<app id>-__assignor-__leader``; app id ``<prefix>health``)."""
    return f"{cfg.kafka.topic_prefix}health-__assignor-__leader"


def acl_table(cfg: Config, principals: dict[str, tuple[str, ...]] | None = None) -> list[Grant]:
    """Every grant, sorted and without duplicates. ``principals``: role -> principals (default: the config's)."""
    who = principals if principals is not None else cfg.kafka.principals.by_role()
    t, prefix = cfg.topic, cfg.kafka.topic_prefix
    out: dict[Grant, Grant] = {}

    def grant(role: str, resource: str, name: str, op: str, why: str, pattern: str = "literal") -> None:
        for p in who.get(role, ()):
            g = Grant(p, resource, name, pattern, op, why)
            out.setdefault(g, g)

    services = ("router", "replayer", "health", "features")
    for role in services:
        for name in topic_plan(cfg):
            grant(role, "topic", name, "DESCRIBE", "start: the topic layout is checked")
            grant(role, "topic", name, "DESCRIBE_CONFIGS", "start: topic settings checked, size limits read")
        grant(role, "topic", t("region-state"), "READ", "follows region states")

    for region in cfg.regions:
        writes, held = t("writes", region), t("held", region)
        grant("router", "topic", writes, "READ", "routes the region's writes")
        grant("router", "group", router_group(cfg, region), "READ", "its consumer group: join, commit")
        grant("router", "topic", held, "WRITE", "holds writes, writes fences")
        grant("router", "topic", held, "READ", "a partition holding only fences switches back without the replayer")
        grant("router", "group", replayer_group(cfg, region), "DESCRIBE", "replayer's offsets gate the switch back")
        grant("replayer", "topic", held, "READ", "replays held writes")
        grant("replayer", "group", replayer_group(cfg, region), "READ", "its consumer group: join, commit")
    for role in ("router", "replayer"):
        grant(role, "topic", t("dead-letter"), "WRITE", "dead-letters bad writes")
        grant(role, "topic", t("observations"), "WRITE", "passive health: apply errors")
        grant(role, "topic", t("failover-events"), "WRITE", "failover/replay events")

    grant("health", "topic", t("region-state"), "WRITE", "publishes region states (the leader)")
    grant("health", "topic", t("observations"), "WRITE", "publishes its probes")
    grant("health", "topic", t("observations"), "READ", "judges every observer's probes")
    grant("health", "topic", t("control"), "READ", "the leader follows breaker commands")
    grant("health", "topic", t("failover-events"), "WRITE", "breaker transitions")
    grant("health", "group", f"{prefix}health", "READ", "faust's leader election group")
    leader = faust_leader_topic(cfg)
    for op, why in (("CREATE", "faust creates its election topic"), ("READ", "faust's election"),
                    ("WRITE", "faust's election"), ("DESCRIBE", "faust's election")):
        grant("health", "topic", leader, op, why)

    grant("features", "topic", t("features"), "WRITE", "publishes feature flags")
    grant("features", "topic", t("features"), "READ", "restores its flags at start")
    grant("features", "topic", t("failover-events"), "WRITE", "features_changed events")

    grant("operator", "topic", t("control"), "WRITE", "regionguard breaker")
    grant("operator", "topic", f"{prefix}writes.", "WRITE", "regionguard dead-letters redrive", "prefixed")
    grant("operator", "topic", prefix, "READ", "status, dead-letters list/redrive, breaker --wait", "prefixed")
    grant("operator", "group", prefix, "DESCRIBE", "status: the services' committed offsets", "prefixed")
    for g in ("status-", "redrive-reader-"):
        grant("operator", "group", f"{prefix}{g}", "READ", "its own readers", "prefixed")

    grant("applications", "topic", f"{prefix}writes.", "WRITE", "publishes writes (idempotent producer)",
          "prefixed")
    return sorted(out)


def extra_describes(table: list[Grant]) -> list[Grant]:
    """DESCRIBE grants implied by a READ or WRITE of the same principal on the same resource (Kafka's rule)."""
    strong = {(g.principal, g.resource, g.name, g.pattern) for g in table if g.operation in ("READ", "WRITE")}
    return [g for g in table if g.operation == "DESCRIBE" and (g.principal, g.resource, g.name, g.pattern) in strong]


def minimal(table: list[Grant]) -> list[Grant]:
    """The table without DESCRIBE grants that a READ or WRITE already implies."""
    drop = set(extra_describes(table))
    return [g for g in table if g not in drop]


def principals_from_args(cfg: Config, overrides: list[str] | None) -> dict[str, tuple[str, ...]]:
    """The config's principals with ``ROLE=User:NAME[,User:NAME2]`` overrides (UsageError on a bad one)."""
    who = cfg.kafka.principals.by_role()
    for item in overrides or ():
        role, sep, value = item.partition("=")
        if not sep or role not in ROLES:
            raise UsageError(f"--principal {item!r}: expected ROLE=User:NAME with ROLE one of {', '.join(ROLES)}")
        try:
            who[role] = tuple(parse_principal(v) for v in value.split(",") if v.strip()) if value else ()
        except ValueError as exc:
            raise UsageError(f"--principal {item!r}: {exc}") from None
    return who


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--apply", action="store_true",
                   help="create the missing ACLs through the AdminClient (needs a principal allowed to alter "
                        "ACLs in kafka.client); without it, print the table")
    p.add_argument("--create-topics", action="store_true",
                   help="with --apply: first create every missing regionguard topic (services under these "
                        "ACLs cannot)")
    p.add_argument("--principal", action="append", metavar="ROLE=User:NAME",
                   help=f"override kafka.principals.ROLE (repeatable; roles: {', '.join(ROLES)}; "
                        "several principals comma-separated; empty: none)")
    p.add_argument("--json", action="store_true", help="one JSON object per grant (principal, resource, name, "
                                                        "pattern, operation, why); with --apply, a summary object")


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    table = minimal(acl_table(cfg, principals_from_args(cfg, args.principal)))
    if args.create_topics and not args.apply:
        raise UsageError("--create-topics needs --apply")
    if not args.apply:
        for g in table:
            print(json.dumps(dataclasses.asdict(g)) if args.json else g.line())
        return 0
    from .aclsapply import apply  # needs a broker: imported only for --apply

    created: list[str] = []
    if args.create_topics:
        from ..core.kafka import ensure_topics

        created = ensure_topics(cfg)
        if not args.json:
            print(f"topics: {len(created)} created" + (f" ({', '.join(created)})" if created else ""))
    added, present = apply(cfg, table)
    if args.json:
        print(json.dumps({"added": added, "present": present, "table": len(table), "topics_created": created}))
        return 0
    print(f"acls: {added} added, {present} already present ({len(table)} in the table)")
    return 0

