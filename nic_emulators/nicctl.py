"""``python -m nic_emulators.nicctl SOCKET OP [KEY=VALUE ...]``: one control operation, by hand.

For bring-up sessions and for the lab's wiring (a power-supply channel that
powers a NIC runs ``nicctl <nic ctl.sock> POWER on=false``). Values are JSON
(``vf=2``, ``on=false``, ``macs='["01:00:5e:00:00:01"]'``) or plain strings.
Prints the result as JSON; exit status 1 with the device's error on refusal.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from nic_emulators.control import ControlClient, ControlError


def parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nic_emulators.nicctl", description=__doc__)
    parser.add_argument("socket", help="control socket (a NIC's ctl.sock, a guest's vmx.sock...)")
    parser.add_argument("op", help="operation, e.g. STATUS, POWER, VF_REMOVE, status, switch")
    parser.add_argument("args", nargs="*", metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    params: dict[str, Any] = {}
    for item in args.args:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"{item!r}: arguments are KEY=VALUE")
        params[key] = parse_value(value)
    try:
        with ControlClient(args.socket) as client:
            result = client.call(args.op, **params)
    except ControlError as err:
        print(f"nicctl: {args.op}: {err} ({err.code})", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
