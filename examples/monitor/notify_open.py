"""Follow ``<prefix>region-state`` and ``<prefix>failover-events``; tell someone when a region opens.

Prints one line per failover event (kind, region, service, detail) and per region-state change
(heartbeats, which republish an unchanged state, are skipped), and when a region turns ``open``
POSTs a JSON message to ``--webhook`` (Slack/Teams/Mattermost incoming webhooks take ``text``)::

    python examples/monitor/notify_open.py --bootstrap 127.0.0.1:9092 --webhook https://hooks.example/T0/B0/X

Starts at the end of both topics (``--from-beginning`` replays them). Needs only confluent-kafka.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
import uuid

from confluent_kafka import Consumer


def post(url: str, body: dict) -> None:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()
    except OSError as exc:  # a webhook that is down must not stop the watch
        print(f"webhook failed: {exc}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--prefix", default="rg.", help="kafka.topic_prefix")
    ap.add_argument("--webhook", help="URL to POST {text, region, state, reason, since, seq} to when a region opens")
    ap.add_argument("--from-beginning", action="store_true")
    args = ap.parse_args(argv)
    states_topic, events_topic = f"{args.prefix}region-state", f"{args.prefix}failover-events"
    c = Consumer({"bootstrap.servers": args.bootstrap, "group.id": f"rg-notify-{uuid.uuid4().hex[:8]}",
                  "enable.auto.commit": False,
                  "auto.offset.reset": "earliest" if args.from_beginning else "latest"})
    c.subscribe([states_topic, events_topic],
                on_assign=lambda cons, parts: print(f"watching {states_topic}, {events_topic}", flush=True))
    last: dict[str, dict] = {}  # region -> newest RegionState
    try:
        while True:
            msg = c.poll(1.0)
            if msg is None:
                continue
            if msg.error():
                print(f"kafka: {msg.error()}", file=sys.stderr, flush=True)
                continue
            if msg.value() is None:
                continue
            doc = json.loads(msg.value())
            if msg.topic() == events_topic:
                print(f"event {doc['kind']} region={doc['region']} service={doc['service']} "
                      f"detail={json.dumps(doc.get('detail', {}))}", flush=True)
                continue
            region, old = doc["region"], last.get(doc["region"])
            if old is not None and (doc.get("epoch", 0), doc["seq"]) < (old.get("epoch", 0), old["seq"]):
                continue  # an older record: readers keep the highest (epoch, seq)
            last[region] = doc
            if old is not None and old["state"] == doc["state"]:
                continue  # heartbeat or repeat
            print(f"state {region} {doc['state']} seq={doc['seq']} reason={doc.get('reason') or '-'}", flush=True)
            if doc["state"] == "open" and args.webhook:
                post(args.webhook, {"text": f"regionguard: region {region} is OPEN ({doc.get('reason') or '-'}); "
                                            f"writes to it are held in Kafka until it closes",
                                    "region": region, "state": doc["state"], "reason": doc.get("reason", ""),
                                    "since": doc["since"], "seq": doc["seq"]})
    except KeyboardInterrupt:
        return 0
    finally:
        c.close()


if __name__ == "__main__":
    sys.exit(main())
