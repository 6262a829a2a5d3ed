"""``make bench``: run every benchmark, print a table, write bench-results.json.

Exit status 1 if a target was missed.
"""

from __future__ import annotations

import sys

from tests.benchmarks import data_path, lab_and_ssh, migration, traffic
from tests.benchmarks.figures import print_table, write_json
from tests.labkit import REPO


def main() -> int:
    results = lab_and_ssh.run() + traffic.run() + data_path.run() + migration.run()
    print_table(results)
    out = REPO / "bench-results.json"
    write_json(results, out)
    print(f"\nwritten: {out}")
    return 1 if any(r.met is False for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
