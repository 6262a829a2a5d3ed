"""``npabench migrate FILE GUEST HOST [--traffic]``: one live migration, its timeline, its verdict.

Without ``--traffic`` the migration runs alone and the verdict judges what the
hypervisor reports; with it, sequenced UDP both ways between the traffic
generator and the guest (and a TCP stream with ``--tcp``) run across it, and
the wire's figures are judged too. Exit status 0 when the verdict passes, 1
when it fails; 2 for bad arguments, 3 when the lab cannot do it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.errors import UsageError
from bench.migration.defaults import DEFAULT_PPS
from bench.topology import load_topology

# The lab and the orchestrator (scapy) are imported in run(): `npabench` imports this module
# for its parser.


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("topology", help="topology file (its lab must be up)")
    p.add_argument("guest", help="guest to migrate")
    p.add_argument("host", help="destination hypervisor host")
    p.add_argument("--traffic", action="store_true", help="measure under traffic both ways")
    p.add_argument("--tcp", action="store_true", help="with --traffic: a TCP stream as well")
    p.add_argument(
        "--pps", type=int, default=DEFAULT_PPS, help=f"frames/s each way (default {DEFAULT_PPS})"
    )
    p.add_argument(
        "--seconds", type=float, default=None, help="traffic duration (default: about 2.5 s)"
    )
    p.add_argument(
        "--fail-at-destination",
        action="store_true",
        help="inject a destination failure (the guest must stay on its source)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.epilog = (
        "Exit status 0: the verdict passed; 1: it failed (the checks say why); "
        "2: bad arguments; 3: the lab could not migrate."
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bench.lab import attach
    from bench.migration.orchestrator import TrafficPlan, describe, migrate_under_traffic
    from bench.migration.verdict import Expectation

    topology = load_topology(Path(args.topology))
    if args.guest not in {g.name for g in topology.guests}:
        known = ", ".join(g.name for g in topology.guests) or "none"
        raise UsageError(f"lab {topology.lab.name!r} has no guest {args.guest!r} (guests: {known})")
    if args.pps <= 0:
        raise UsageError(f"--pps must be positive, got {args.pps}")
    plan = None
    if args.traffic:
        plan = TrafficPlan(pps=args.pps, tcp=args.tcp)
        if args.seconds is not None:
            plan = TrafficPlan(pps=args.pps, tcp=args.tcp, seconds=args.seconds)
    with attach(Path(args.topology)) as lab:
        expect = Expectation(outcome="failed") if args.fail_at_destination else None
        migration = migrate_under_traffic(
            lab,
            args.guest,
            args.host,
            traffic=plan,
            expect=expect,
            fail_at_destination=args.fail_at_destination,
            progress=print if not args.json else lambda _: None,
        )
    if args.json:
        print(json.dumps(migration.to_json(), indent=2))
    else:
        print(describe(migration))
    return 0 if migration.verdict.passed else 1
