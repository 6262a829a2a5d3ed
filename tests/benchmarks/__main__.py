"""``make bench``: run every benchmark, print a table, write bench-results.json.

Exit status 1 if a target was missed.
"""

from __future__ import annotations

import sys

from tests.benchmarks import lab_and_ssh
from tests.benchmarks.figures import print_table, write_json
from tests.labkit import REPO


def main() -> int:
    results = lab_and_ssh.run()
    print_table(results)
    out = REPO / "bench-results.json"
    write_json(results, out)
    print(f"\nwritten: {out}")
    return 0 if all(r.met for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
