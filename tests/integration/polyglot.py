"""The client packages of other languages (clients/java, clients/go, clients/node; docs/clients.md),
built once and cached, for the partitioning and conformance tests.

Each helper returns the command line that runs the package's CLI (``[... , "vectors", FILE]`` or
``[..., "produce", BOOTSTRAP, PREFIX, REGION]``) or raises :class:`Missing` naming the missing
toolchain, which the tests turn into a loud skip. Builds are keyed by a hash of the example's
sources and kept under ``~/.cache/regionguard`` (``$RG_CACHE_DIR``), so a fresh clone in CI
builds once per change of the package and later runs start at once. The packages' own unit tests
run in scripts/test-clients.sh (`make test`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
JAVA_DIR = ROOT / "clients" / "java"
GO_DIR = ROOT / "clients" / "go"
NODE_DIR = ROOT / "clients" / "node"
NODE_EXAMPLES_DIR = ROOT / "examples" / "node"  # produce.js and the monitors, on the package


class Missing(Exception):
    """A toolchain (or a dependency it could not resolve) is missing: the language is skipped."""


def cache_dir() -> Path:
    return Path(os.environ.get("RG_CACHE_DIR") or Path.home() / ".cache" / "regionguard")


def _digest(base: Path, patterns: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    for pattern in patterns:
        for path in sorted(base.glob(pattern)):
            if path.is_file():
                h.update(str(path.relative_to(base)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def loud_skip_reason(lang: str, what: str) -> str:
    """The skip text: also issued as a warning so it shows in the summary's warnings section."""
    reason = f"LOUD SKIP: {lang} producer NOT checked: {what}"
    warnings.warn(reason, stacklevel=2)
    return reason


def java_producer() -> list[str]:
    """``java -jar regionguard-client.jar``, built with ``mvn package`` once per source change."""
    java, mvn = shutil.which("java"), shutil.which("mvn")
    if java is None or mvn is None:
        raise Missing(f"no {'java' if java is None else 'mvn'} on PATH (install a JDK 17+ and Maven)")
    out = cache_dir() / "java-client" / _digest(JAVA_DIR, ("pom.xml", "src/main/**/*.java"))
    jar = out / "regionguard-client.jar"
    if not jar.exists():
        proc = subprocess.run([mvn, "-q", "-B", "-f", str(JAVA_DIR / "pom.xml"), "package", "-DskipTests",
                               f"-Drg.build.dir={out}"], capture_output=True, text=True, timeout=900)
        if proc.returncode != 0 or not jar.exists():
            raise RuntimeError(f"mvn package of clients/java failed: {(proc.stdout + proc.stderr)[-3000:]}")
    return [java, "-jar", str(jar)]


def go_producer() -> list[str]:
    """``rg-producer``, built with ``go build`` once per source change (franz-go from the module proxy)."""
    go = shutil.which("go")
    if go is None:
        raise Missing("no go on PATH (install Go 1.25+)")
    out = cache_dir() / "go-client" / _digest(GO_DIR, ("go.mod", "go.sum", "**/*.go"))
    binary = out / "rg-producer"
    if not binary.exists():
        out.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run([go, "build", "-o", str(binary) + ".tmp", "./cmd/rg-producer"], cwd=GO_DIR,
                              capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            raise RuntimeError(f"go build of clients/go failed: {(proc.stdout + proc.stderr)[-3000:]}")
        os.replace(str(binary) + ".tmp", binary)
    return [str(binary)]


def node_binary() -> str | None:
    """The Node.js the client packages run on: clients/node's own (its devDependency `node`, Node 22,
    which @platformatic/kafka needs: docs/clients.md) when installed, else the one on PATH."""
    own = NODE_DIR / "node_modules" / ".bin" / "node"
    return str(own) if own.exists() else shutil.which("node")


def node_script(name: str, where: Path = NODE_DIR) -> list[str]:
    """``node clients/node/<name>`` (or ``where``) once its packages are installed (scripts/setup.sh runs npm install)."""
    node = node_binary()
    if node is None:
        raise Missing("no node on PATH (install Node.js 22.22+)")
    needs = "@platformatic/kafka" if where == NODE_DIR else "kafkajs"  # the examples' monitors are on kafkajs
    if not (where / "node_modules" / needs).exists():
        raise Missing(f"{needs} is not installed: run `npm install` in {where.relative_to(ROOT)} (scripts/setup.sh does)")
    return [node, str(where / name)]
