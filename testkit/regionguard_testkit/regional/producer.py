"""One region's application producers, as a process of their own so a regional event can SIGKILL them.

``python -m regionguard_testkit.regional.producer --config rX.yaml --home rX --lane N --rate R --journal f``
runs a :class:`~regionguard_testkit.verify.loadgen.LoadGen` that writes for every region's users, most
for its own region's (``--home-share``), as an app does whose users travel. Every write is journaled
as unconfirmed before it is sent and again once Kafka acknowledged its batch (with the time it was
handed to the producer), so a SIGKILL leaves nothing in Kafka the model does not know and the checker
demands only what was acknowledged. SIGTERM ends the run cleanly: the last batch is flushed first.

``--lane`` keeps the keys of this incarnation apart from every other producer's (a producer
restarted after its region returns takes a new lane: its version counters start again at 1).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from regionguard.core.config import load_config

from ..verify.loadgen import LoadGen, Mix, Model

__all__ = ["main", "regions_weighted"]


def regions_weighted(regions: list[str], home: str, home_share: float) -> list[str]:
    """A list to draw a region from uniformly that gives ``home`` about ``home_share`` of the draws."""
    others = [r for r in regions if r != home]
    if not others or home_share >= 1.0:
        return [home]
    per_other = max(1, round((1.0 - home_share) * 20 / len(others)))
    home_n = max(1, round(home_share * 20))
    return [home] * home_n + [r for r in others for _ in range(per_other)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m regionguard_testkit.regional.producer")
    p.add_argument("--config", required=True)
    p.add_argument("--home", required=True, help="the region this producer runs in")
    p.add_argument("--lane", type=int, required=True)
    p.add_argument("--rate", type=float, default=120.0, help="writes per second")
    p.add_argument("--batch", type=int, default=50, help="writes per flush (each flush waits for every ack)")
    p.add_argument("--home-share", type=float, default=0.6)
    p.add_argument("--consent", type=float, default=0.02, help="share of consent writes (residency)")
    p.add_argument("--journal", required=True)
    p.add_argument("--seed", type=int, default=None)
    args = p.parse_args(argv)
    cfg = load_config(args.config)
    if args.home not in cfg.regions:
        print(f"unknown region {args.home!r}", file=sys.stderr)
        return 2
    model = Model(args.journal)
    gen = LoadGen(cfg, model, regions=regions_weighted(list(cfg.regions), args.home, args.home_share),
                  rate=args.rate, batch=args.batch, seed=args.seed, lane=args.lane, journal=True,
                  mix=Mix(consent=args.consent), flush_timeout=60.0)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        gen.run(stop=stop)
    finally:
        gen.close()
    s = gen.stats
    print(f"producer {args.home} lane {args.lane}: produced {s.produced} acked {s.acked} "
          f"unconfirmed {s.unconfirmed} flush failures {s.flush_failures} {s.last_error}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
