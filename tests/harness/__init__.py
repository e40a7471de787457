"""Reusable, mock-free test harness: real broker, real PostgreSQL, real faults.

The reusable parts live in the installed package :mod:`regionguard_testkit.embedded`
(so ``regionguard demo`` works without a checkout); the modules here re-export
them under their old names. Used by integration and chaos tests and benchmarks
(``bench/``); nothing here imports pytest (fixtures live in ``tests/conftest.py``).
"""

from .broker import GROUP_TUNING, Broker, BrokerError, create_topics, tansu_binary
from .config import DEFAULT_TABLES, ConfigFile, deep_merge, make_config, regions_config, write_config
from .net import free_port, port_open, run_sync, wait_port
from .pgcluster import PgCluster, PgClusterError, pg_bindir
from .proxy import MODES, FaultProxy, ProxyStats
from .regions import DEFAULT_REGIONS, DEFAULT_SCHEMA, LocalRegions, db_name
from .services import ServiceError, ServiceProcess
from .topics import ensure_plan_topics, topic_plan

__all__ = [
    "GROUP_TUNING", "Broker", "BrokerError", "create_topics", "tansu_binary",
    "free_port", "port_open", "run_sync", "wait_port",
    "PgCluster", "PgClusterError", "pg_bindir",
    "MODES", "FaultProxy", "ProxyStats",
    "DEFAULT_REGIONS", "DEFAULT_SCHEMA", "DEFAULT_TABLES", "LocalRegions", "db_name", "deep_merge",
    "regions_config", "write_config", "ConfigFile", "make_config",
    "ServiceError", "ServiceProcess",
    "ensure_plan_topics", "topic_plan",
]
