"""The "done when" of issue 24, full size: 200 photos written into IN by 4 writers (slowly, in chunks, under
temporary names renamed at the end) while `winclip watch` (tiny random-weight ViT) is SIGKILLed at random moments
and restarted 5 times, and the MQTT broker (a local Mosquitto) is stopped for 30 s mid-run.

    python benchmarks/line_soak.py [--photos 200] [--writers 4] [--kills 5] [--outage 30] [--seed 0]

Prints the figures and the checks: one results row, one record row and one message id per photo (copies only as
QoS 1 allows, with the same id), the messages in the order the photos were finished, no partial file scored.
Exit status 1 when a check fails. tests/line/test_soak.py runs it small (40 photos, 2 kills, 3 s).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from helpers.soak import first_copies, soak  # noqa: E402
from line_latency import cpu_name  # noqa: E402


def checks(r) -> dict[str, bool]:  # noqa: ANN001 - helpers.soak.SoakResult
    """Each check of the issue, by name."""
    by_id: dict[str, set[str]] = {}
    for m in r.messages:
        by_id.setdefault(m["message_id"], set()).add(m["rel"])
    return {
        f"{r.photos} results rows, one per photo": sorted(x["rel"] for x in r.result_rows) == sorted(r.written),
        f"{r.photos} record rows, one per photo": sorted(f for f, _ in r.record_rows) == sorted(r.written),
        f"{r.photos} MQTT message ids, one per photo": len(by_id) == r.photos and set(by_id) == set(r.finished_order),
        "copies carry their original's id": all(len(v) == 1 for v in by_id.values()),
        "messages in finishing order": first_copies(r.messages) == r.finished_order,
        "0 partial files scored": all(r.written[f] == sha for f, sha in r.record_rows),
        "every photo moved to done/": r.done_files == sorted(r.written) and not r.left_in and not r.failed_files,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--outage", type=float, default=30.0, help="seconds the broker is stopped")
    parser.add_argument("--seed", type=int, default=0)
    a = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        r = soak(Path(tmp), photos=a.photos, writers=a.writers, kills=a.kills, outage_s=a.outage, seed=a.seed)
    print(f"CPU: {cpu_name()}")
    print(r.table())
    results = checks(r)
    for name, ok in results.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
