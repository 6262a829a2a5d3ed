"""The ``npabench`` command: topology file in, lab, tests and results out.

Exit status: 0 success; 1 tests failed; 2 bad input (topology file, arguments);
3 a lab or host error; 130 interrupted. Errors are one clear message, never a
traceback (set NPABENCH_DEBUG=1 to see one for an internal error).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from bench import __version__
from bench.bringup.dump import add_parser as add_dump_parser
from bench.errors import BenchError, LabError, UsageError
from bench.history.commands import add_history_option
from bench.history.commands import add_parsers as add_history_parsers
from bench.history.store import history_path
from bench.lab_commands import add_cleanup_parser, add_status_parser
from bench.migration import command as migrate_command
from bench.progress import to_stderr as progress
from bench.signals import sigterm_interrupts
from bench.topology import Topology, load_topology

# The lab, traffic, SSH, instrument and pytest modules (scapy, pytest: most of a second) are
# imported in the commands that use them, so `npabench validate` and `--help` start fast.

DEFAULT_TOPOLOGY = "topologies/emulated-lab.yaml"


def cmd_validate(args: argparse.Namespace) -> int:
    failed: list[BenchError] = []
    for path in args.topology:
        try:
            topo = load_topology(path)
        except BenchError as err:
            failed.append(err)
            print(f"npabench: error: {err}", file=sys.stderr)
            continue
        print(f"{path}: ok ({_summary(topo)})")
    return failed[0].exit_status if failed else 0


def _summary(topo: Topology) -> str:
    parts = [
        f"lab {topo.lab.name}",
        f"{len(topo.hosts)} host(s)",
        f"{len(topo.switches)} switch(es)",
        f"{len(topo.instruments)} instrument(s)",
        f"{len(topo.guests)} guest(s)",
    ]
    return ", ".join(parts)


def cmd_schema(args: argparse.Namespace) -> int:
    print(json.dumps(Topology.model_json_schema(), indent=2))
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from bench.lab import bring_up

    with bring_up(Path(args.topology), progress) as lab:
        for name, endpoint in lab.endpoints.items():
            print(f"{name}: ssh {endpoint.user}@{endpoint.address} -p {endpoint.port}")
    print(f"reach them: npabench ssh-config {args.topology} > lab.ssh && ssh -F lab.ssh HOST")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from bench.lab import bring_down

    bring_down(Path(args.topology), progress)
    return 0


def cmd_switch(args: argparse.Namespace) -> int:
    from bench.lab import attach
    from nic_emulators.control import ControlError

    topology = load_topology(Path(args.topology))
    if args.guest not in {g.name for g in topology.guests}:  # a typo is bad input, up or not
        known = ", ".join(g.name for g in topology.guests) or "none"
        raise UsageError(f"lab {topology.lab.name!r} has no guest {args.guest!r} (guests: {known})")
    with attach(Path(args.topology)) as lab:
        timeout = lab.topology.limits.command_timeout_s
        with lab.guest_control(args.guest, timeout=timeout) as device:
            try:
                result = device.call("switch", to=args.to)
            except ControlError as err:
                raise LabError(
                    f"guest {args.guest}: switch to {args.to} refused by its vmxnet3 device: "
                    f"{err} ({err.code})"
                ) from None
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    took = result.get("took_ms")
    took_text = f" in {took:.1f} ms" if isinstance(took, int | float) else ""
    print(f"{args.guest}: {result.get('mode', '?')}{took_text}")
    for step in result.get("steps", []):
        print(f"  {step if isinstance(step, str) else json.dumps(step)}")
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    from bench.lab import attach
    from bench.ssh import run_on_all

    if not args.command:
        raise UsageError("exec: no command given (usage: npabench exec FILE HOST -- CMD ...)")
    if args.timeout is not None and args.timeout <= 0:
        raise UsageError(f"exec: --timeout must be more than 0 seconds, got {args.timeout:g}")
    command = " ".join(args.command)
    with attach(Path(args.topology)) as lab:
        names = list(lab.endpoints) if args.host == "all" else args.host.split(",")
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise UsageError(f"exec: host(s) named twice: {', '.join(twice)}")
        hosts = lab.hosts(names)
        timeout = args.timeout or lab.topology.limits.command_timeout_s
        results = run_on_all(hosts, command, timeout=timeout)
    worst = 0
    for name, result in results.items():
        prefix = f"{name}: " if len(results) > 1 else ""
        for line in result.stdout.splitlines():
            print(f"{prefix}{line}")
        for line in result.stderr.splitlines():
            print(f"{prefix}{line}", file=sys.stderr)
        worst = max(worst, result.exit_status)
    return worst


def cmd_traffic(args: argparse.Namespace) -> int:
    from bench.lab import attach
    from bench.traffic.engine import TrafficSpec, reverse, run_flows
    from bench.traffic.results import format_table

    if args.pps is not None and args.pps <= 0:
        raise UsageError(f"traffic: --pps must be more than 0, got {args.pps}")
    if args.duration <= 0:
        raise UsageError(f"traffic: --duration must be more than 0 s, got {args.duration:g}")
    spec = TrafficSpec(
        source=args.source,
        to=args.to,
        pps=args.pps,
        duration_s=args.duration,
        frame_size=args.size,
        vlan=args.vlan,
    )
    with attach(Path(args.topology)) as lab:
        lab.endpoint(args.source)  # a clear error naming the lab's hosts and guests if unknown
        specs = [spec, reverse(lab, spec)] if args.both_ways else [spec]
        results = run_flows(lab, specs, progress)
    if args.json:
        data = [r.to_json() for r in results]
        print(json.dumps(data if args.both_ways else data[0], indent=2))
    else:
        print(format_table(results))
    return 0


def _is_query(command: str) -> bool:
    """Whether a SCPI line asks for an answer: a header (of any ;-unit) ending in '?'."""
    return any(unit.split()[0].endswith("?") for unit in command.split(";") if unit.strip())


def cmd_instrument(args: argparse.Namespace) -> int:
    from bench.instruments.registry import open_instrument
    from bench.lab import attach

    with attach(Path(args.topology)) as lab:
        spec = next((i for i in lab.topology.instruments if i.name == args.name), None)
        resource = lab.instrument_resource(args.name)  # a clear error if unknown
        assert spec is not None
        log = lab.state.directory / "instruments" / f"{spec.name}.commands.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        instrument = open_instrument(
            spec.kind,
            resource,
            spec.channels,
            expected_model=spec.model,
            log_path=log,
            name=spec.name,
        )
        try:
            with instrument.commands():  # the error queue is drained and reported after
                for command in args.scpi:
                    if _is_query(command):
                        print(instrument.query(command))
                    else:
                        instrument.write(command)
        finally:
            instrument.close()
    return 0


def cmd_ssh_config(args: argparse.Namespace) -> int:
    from bench.lab import attach
    from bench.ssh import render_ssh_config

    with attach(Path(args.topology)) as lab:
        sys.stdout.write(render_ssh_config(list(lab.endpoints.values())))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from bench.runner import REPO_ROOT, RunOptions, run_suite

    topology = Path(args.topology) if args.topology else REPO_ROOT / DEFAULT_TOPOLOGY
    options = RunOptions(
        report_dir=Path(args.report),
        keyword=args.k,
        suite=Path(args.suite) if args.suite else None,
        pytest_args=args.pytest_args,
        history=None if args.no_history else history_path(args.history),
        step=args.step,
    )
    return run_suite(topology, options, progress)


def _add_traffic(p: argparse.ArgumentParser) -> None:
    p.add_argument("topology", help="topology file (its lab must be up)")
    p.add_argument("--from", dest="source", required=True, metavar="HOST", help="sending host")
    p.add_argument(
        "--to",
        required=True,
        metavar="ADDR",
        help="a lab host or its address (one-way UDP, checked there), or any address that "
        "answers ICMP echo (round trip, checked on the sender)",
    )
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--pps", type=int, default=1000, help="frames per second (default 1000)")
    rate.add_argument(
        "--max-rate", dest="pps", action="store_const", const=None, help="as fast as possible"
    )
    p.add_argument("--duration", type=float, default=5.0, metavar="S", help="seconds (default 5)")
    p.add_argument("--size", type=int, default=128, metavar="B", help="frame size (default 128)")
    p.add_argument("--vlan", type=int, default=None, help="802.1Q tag to add")
    p.add_argument(
        "--both-ways",
        action="store_true",
        help="also the same traffic back, at the same time (lab hosts only; JSON: a list)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_traffic)


def _add_switch(p: argparse.ArgumentParser) -> None:
    p.add_argument("topology", help="topology file (its lab must be up)")
    p.add_argument("guest", help="guest name in the topology")
    p.add_argument("to", choices=["emulation", "passthrough"], help="the mode to switch to")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.epilog = "Exit status 3 (with the device's reason) when the device refuses the switch."
    p.set_defaults(func=cmd_switch)


def _add_run(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "topology", nargs="?", default=None, help=f"topology file (default: {DEFAULT_TOPOLOGY})"
    )
    p.add_argument("-k", default=None, metavar="EXPR", help="only tests matching EXPR (pytest -k)")
    p.add_argument("--report", default="report", metavar="DIR", help="report directory (report)")
    p.add_argument("--suite", default=None, help="test directory (default: tests/conformance)")
    p.add_argument(
        "--step",
        action="store_true",
        help="bring-up: pause before each test; on a failure keep the lab up and say how "
        "to reach its hosts and instruments",
    )
    add_history_option(p)
    p.add_argument("--no-history", action="store_true", help="do not record this run")
    p.epilog = "Arguments after -- go to pytest, e.g. npabench run FILE -- -x -vv"
    p.set_defaults(func=cmd_run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="npabench",
        description="Test bench for NIC plugin data paths: topology -> lab -> tests -> report.",
        epilog="Exit status: 0 ok, 1 tests failed, 2 bad input, 3 lab/host error, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"npabench {__version__}")
    sub = parser.add_subparsers(dest="command_name", required=True, metavar="COMMAND")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=help_text)

    p = add("validate", "check topology files; print every fault with file:line:column and field")
    p.add_argument("topology", nargs="+", help="topology file(s)")
    p.set_defaults(func=cmd_validate)

    p = add("schema", "print the JSON Schema of topology files")
    p.set_defaults(func=cmd_schema)

    p = add(
        "up",
        "bring the lab of a topology up (namespaces, switches, sshd per host and guest, "
        "NIC emulators, guest NICs; QEMU VMs for the guests of a QEMU hypervisor)",
    )
    p.add_argument("topology", help="topology file")
    p.set_defaults(func=cmd_up)

    p = add("down", "tear the lab of a topology down")
    p.add_argument("topology", help="topology file")
    p.set_defaults(func=cmd_down)

    add_cleanup_parser(add)
    add_status_parser(add)

    _add_switch(
        add(
            "switch",
            "switch a guest's NIC between emulation and passthrough (a VF driven by its "
            "plugin); prints the mode reached, the time taken and the steps",
        )
    )

    migrate_command.add_arguments(
        add(
            "migrate",
            "live-migrate a guest to another host (optionally under traffic); prints the "
            "timeline of the hypervisor's events beside the wire's and the verdict",
        )
    )

    p = add("exec", "run a command on lab host(s) or guest(s) over SSH; exit with its status")
    p.add_argument("topology", help="topology file")
    p.add_argument(
        "host", help="host or guest name, comma-separated names, or 'all' (hosts and guests)"
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="S",
        help="deadline in seconds (default: the topology's limits.command_timeout_s)",
    )
    p.add_argument("command", nargs="*", help="the command; put it after -- if it has options")
    p.set_defaults(func=cmd_exec)

    _add_traffic(
        add("traffic", "send sequenced traffic between lab hosts, print what was measured")
    )

    p = add("instrument", "send SCPI commands to a lab instrument (queries print their answer)")
    p.add_argument("topology", help="topology file (its lab must be up)")
    p.add_argument("name", help="instrument name in the topology")
    p.add_argument("scpi", nargs="+", metavar="COMMAND", help="SCPI command(s), e.g. 'VOLT? (@1)'")
    p.set_defaults(func=cmd_instrument)

    p = add("ssh-config", "print an OpenSSH client config for the lab (use with ssh -F)")
    p.add_argument("topology", help="topology file")
    p.set_defaults(func=cmd_ssh_config)

    _add_run(add("run", "bring the lab up, run the conformance suite, write the report, tear down"))

    add_history_parsers(add)
    add_dump_parser(add)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    after_dashes: list[str] = []
    if argv[:1] in (["run"], ["exec"]) and "--" in argv:  # `exec|run ... -- ARGS`
        cut = argv.index("--")
        argv, after_dashes = argv[:cut], argv[cut + 1 :]
    args = build_parser().parse_args(argv)
    if args.command_name == "run":
        args.pytest_args = after_dashes
    elif args.command_name == "exec" and after_dashes:
        args.command = after_dashes
    sigterm_interrupts()  # SIGTERM unwinds like Ctrl-C, so every `finally` tears down
    try:
        status: int = args.func(args)
        return status
    except BenchError as err:
        print(f"npabench: error: {err}", file=sys.stderr)
        return err.exit_status
    except KeyboardInterrupt:
        print("npabench: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # the last line of defence: no traceback for the user
        if os.environ.get("NPABENCH_DEBUG"):
            traceback.print_exc()
        print(
            f"npabench: internal error: {type(err).__name__}: {err} "
            "(set NPABENCH_DEBUG=1 for a traceback)",
            file=sys.stderr,
        )
        return 3


if __name__ == "__main__":
    sys.exit(main())
