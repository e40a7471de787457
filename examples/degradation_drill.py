"""Drill: the example shop goes from healthy to degraded and back, with its real HTTP responses.

Everything is real and local: a tansu broker, three PostgreSQL databases
(eu, us, ap) each behind a fault-injecting TCP proxy (the test harness),
``regionguard features`` (and ``regionguard health`` and ``router`` when this
build has them) as subprocesses, and ``examples/shop.py`` under uvicorn. The
drill blackholes eu's database, waits for the degraded behaviour, restores
it and waits for recovery, printing every request and response as Markdown
(this is how ``docs/degradation.md`` was made)::

    python examples/degradation_drill.py [--out transcript.md] [--health real|simulated|auto]

With ``--health simulated`` (or when the health service is not in this build)
region states are published to ``<prefix>region-state`` by the drill itself,
exactly as the health service would.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from regionguard_testkit.testing import StatePublisher  # noqa: E402
from tests.harness import Broker, LocalRegions, ServiceProcess, free_port, make_config, wait_port  # noqa: E402

SHOWN_HEADERS = ("retry-after", "x-region-served", "x-served-tier", "x-degraded", "x-degraded-reason")


class Transcript:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.t0 = time.monotonic()

    def say(self, text: str) -> None:
        self.lines.append(text)
        print(text, flush=True)

    def clock(self) -> str:
        return f"t={time.monotonic() - self.t0:5.1f}s"

    def request(self, http: httpx.Client, method: str, path: str, **kw) -> httpx.Response:
        r = http.request(method, path, **kw)
        body = kw.get("json")
        out = [f"{method} {path}" + (f"  {json.dumps(body)}" if body else ""), "",
               f"HTTP/1.1 {r.status_code} {r.reason_phrase}"]
        for h in SHOWN_HEADERS:
            if h in r.headers:
                out.append(f"{'-'.join(p.capitalize() for p in h.split('-'))}: {r.headers[h]}")
        try:
            out.append(json.dumps(r.json(), separators=(", ", ": ")))
        except ValueError:
            out.append(r.text)
        self.say("```http\n" + "\n".join(out) + "\n```")
        return r


def wait_until(http: httpx.Client, path: str, pred, timeout: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if pred(http.get(path)):
                return time.monotonic() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {path}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="also write the Markdown transcript here")
    ap.add_argument("--health", choices=("auto", "real", "simulated"), default="auto")
    args = ap.parse_args()
    have_health = importlib.util.find_spec("regionguard.health.service") is not None
    real_health = args.health == "real" or (args.health == "auto" and have_health)
    have_router = (importlib.util.find_spec("regionguard.router.service") is not None
                   and importlib.util.find_spec("regionguard.replayer.service") is not None)
    tmp = Path(tempfile.mkdtemp(prefix="rg-drill-"))
    tr = Transcript()
    procs: list[ServiceProcess] = []
    pub = None
    with Broker(log_path=tmp / "tansu.log") as broker, LocalRegions(("eu", "us", "ap"), prefix="drill") as lr:
        lr.setup_schema()
        for r in lr.names:
            lr.execute(r, "INSERT INTO users (id, name, email, version) VALUES (1, 'Ada', NULL, 1), "
                          "(2, 'Grace', NULL, 1), (3, 'Edsger', NULL, 1)")
        cf = make_config(lr, broker.bootstrap, tmp / "regionguard.yaml", overrides={
            "features": {"recommendations": {"off_when": ["open", "half_open", "stale"]},
                         "checkout": {"critical": True}},
            "breaker": {"open_wait_s": 3},
        })
        cfg = cf.load()
        try:
            if real_health:
                procs.append(ServiceProcess("health", cf.cli_args("health"), log_dir=tmp))
            else:
                pub = StatePublisher(cfg).start()
            procs.append(ServiceProcess("features", cf.cli_args("features"), log_dir=tmp))
            if have_router:
                procs.append(ServiceProcess("router", cf.cli_args("router"), log_dir=tmp))
                procs.append(ServiceProcess("replayer", cf.cli_args("replayer"), log_dir=tmp))
            port = free_port()
            procs.append(ServiceProcess(
                "shop", ["--app-dir", str(REPO / "examples"), "shop:app", "--port", str(port), "--log-level", "warning"],
                env={"REGIONGUARD_CONFIG": str(cf.path)}, log_dir=tmp, module="uvicorn"))
            if not wait_port("127.0.0.1", port, 30):
                raise SystemExit("shop did not start:\n" + procs[-1].log_tail())
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
                wait_until(http, "/eu/status", lambda r: r.status_code == 200 and r.json()["state"] == "closed", 30)
                services = ["health" if real_health else "simulated health (RegionState records on the topic)",
                            "features", *(["router", "replayer"] if have_router else []), "shop (uvicorn)"]
                tr.say(f"Running: {', '.join(services)}; regions eu, us, ap on local PostgreSQL "
                       f"behind fault proxies; broker tansu.\n")
                tr.say(f"#### 1. Healthy ({tr.clock()})\n")
                tr.request(http, "GET", "/eu/users/1")
                tr.request(http, "GET", "/eu/recommendations")

                tr.say(f"\n#### 2. Drill: eu's database blackholed ({tr.clock()})\n")
                lr.proxy("eu").set_mode("blackhole")
                t_fault = time.monotonic()
                if pub is not None:
                    pub.set("eu", "open", reason="simulated: probes time out")
                wait_until(http, "/eu/status", lambda r: r.json()["state"] == "open", 30)
                wait_until(http, "/eu/recommendations", lambda r: r.status_code == 503, 10)
                tr.say(f"eu judged `open` and recommendations off {time.monotonic() - t_fault:.1f}s after the fault "
                       f"({tr.clock()}):\n")
                tr.request(http, "GET", "/eu/status")
                tr.request(http, "GET", "/eu/users/1")
                tr.request(http, "GET", "/eu/recommendations")
                tr.request(http, "POST", "/eu/orders", json={"id": 7, "user_id": 1, "amount": 9.5})
                tr.request(http, "GET", "/us/recommendations")

                tr.say(f"\n#### 3. eu's database back ({tr.clock()})\n")
                lr.proxy("eu").set_mode("pass")
                t_fix = time.monotonic()
                if pub is not None:
                    time.sleep(cfg.breaker.open_wait_s)
                    pub.set("eu", "half_open", reason="simulated: open wait elapsed")
                    time.sleep(1.0)
                    pub.set("eu", "closed", reason="simulated: trial calls succeeded")
                wait_until(http, "/eu/status", lambda r: r.json()["state"] == "closed", 60)
                time.sleep(1.1)  # the reader's own 1 s cooldown after a failed attempt, if any
                wait_until(http, "/eu/users/1", lambda r: r.headers.get("x-degraded") == "false", 10)
                tr.say(f"eu `closed` again {time.monotonic() - t_fix:.1f}s after the fix ({tr.clock()}):\n")
                tr.request(http, "GET", "/eu/users/1")
                tr.request(http, "GET", "/eu/recommendations")
                if have_router:
                    deadline = time.monotonic() + 30
                    while time.monotonic() < deadline and not lr.fetch("eu", "SELECT 1 FROM orders WHERE id = 7"):
                        time.sleep(0.2)
                    row = lr.fetch("eu", "SELECT id, user_id, amount::float8 AS amount, status FROM orders WHERE id = 7")
                    tr.say(f"\nThe order accepted during the outage, in eu's database after recovery "
                           f"({tr.clock()}): `{row}`")
                if real_health:
                    tr.say(f"\n#### 4. Drill: the health service stopped ({tr.clock()})\n")
                    health = procs[0]
                    health.terminate(timeout=10)
                    t_stop = time.monotonic()
                    wait_until(http, "/us/recommendations", lambda r: r.status_code == 503, 30)
                    tr.say(f"No heartbeats for `health.stale_after_s` ({cfg.health.stale_after_s:g}s): every region "
                           f"counts as `stale`, {time.monotonic() - t_stop:.1f}s after the stop ({tr.clock()}):\n")
                    tr.request(http, "GET", "/us/recommendations")
                    tr.request(http, "GET", "/us/users/1")
                    health.start()
                    t_start = time.monotonic()
                    wait_until(http, "/us/recommendations", lambda r: r.status_code == 200, 60)
                    tr.say(f"\nHealth service restarted: fresh again {time.monotonic() - t_start:.1f}s later "
                           f"({tr.clock()}):\n")
                    tr.request(http, "GET", "/us/recommendations")
        finally:
            for p in reversed(procs):
                p.terminate(timeout=10)
            if pub is not None:
                pub.stop()
    if args.out:
        Path(args.out).write_text("\n".join(tr.lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
