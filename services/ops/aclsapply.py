"""Applying :mod:`regionguard.ops.acls`'s table through the AdminClient (``regionguard acls --apply``).

Reads the ACLs the table's principals already have (DescribeAcls), creates
only the missing ones (CreateAcls), and never deletes one. A broker without
an authorizer, or a principal not allowed to alter ACLs, is a one-line error
(exit 2), decided by Kafka's error code.
"""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AclBinding, AclBindingFilter, AclOperation, AclPermissionType, AdminClient, ResourcePatternType, ResourceType,
)

from ..core.config import Config, UsageError
from .acls import Grant

_RESOURCE = {"topic": ResourceType.TOPIC, "group": ResourceType.GROUP, "cluster": ResourceType.BROKER}
_PATTERN = {"literal": ResourcePatternType.LITERAL, "prefixed": ResourcePatternType.PREFIXED}
_WHY = {
    KafkaError.SECURITY_DISABLED: "the broker has no authorizer (authorizer.class.name is not set)",
    KafkaError.CLUSTER_AUTHORIZATION_FAILED: "this principal may not alter ACLs (kafka.client must name an "
                                             "administrator, e.g. a super user)",
}


def binding(g: Grant) -> AclBinding:
    return AclBinding(_RESOURCE[g.resource], g.name, _PATTERN[g.pattern], g.principal, "*",
                      AclOperation[g.operation], AclPermissionType.ALLOW)


def _key(b: AclBinding) -> tuple:
    return (b.principal, b.restype, b.name, b.resource_pattern_type, b.host, b.operation, b.permission_type)


def _fail(what: str, exc: KafkaException, cfg: Config) -> UsageError:
    err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
    why = _WHY.get(err.code()) if err is not None else None
    if why is None:
        why = err.str() if err is not None else type(exc).__name__
    return UsageError(f"{what} at {cfg.kafka.bootstrap}: {why}")


def existing(admin: AdminClient, principals: set[str], cfg: Config, timeout: float) -> set[tuple]:
    have: set[tuple] = set()
    for p in sorted(principals):
        flt = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, p, None, AclOperation.ANY,
                               AclPermissionType.ANY)
        try:
            have.update(_key(b) for b in admin.describe_acls(flt, request_timeout=timeout).result(timeout=timeout))
        except KafkaException as exc:
            raise _fail("cannot read ACLs", exc, cfg) from None
    return have


def apply(cfg: Config, table: list[Grant], *, timeout: float = 30.0) -> tuple[int, int]:
    """Create the table's missing ACLs; return (added, already present)."""
    admin = AdminClient(cfg.kafka_client_conf())
    wanted = [binding(g) for g in table]
    have = existing(admin, {g.principal for g in table}, cfg, timeout)
    missing = [b for b in wanted if _key(b) not in have]
    if missing:
        for fut in admin.create_acls(missing, request_timeout=timeout).values():
            try:
                fut.result(timeout=timeout)
            except KafkaException as exc:
                raise _fail("cannot create ACLs", exc, cfg) from None
    return len(missing), len(wanted) - len(missing)
