"""CID computation throughput of a large file: ours beside the JS reference importer, one run.

    python benchmarks/content.py [--size-mb 200] [--rounds 3] [--profile unixfs-v1-2025 ...]

Both sides import the same file from disk with the same profile and keep no blocks (ours: no
blockstore; the reference: ipfs-unixfs-importer into a black-hole blockstore), so what is
timed is reading, chunking, hashing and building the DAG. Rounds alternate (ours, then the
reference) and the best of each is kept; the reference times its import inside Node.js, so
process start-up is not counted against it. Printed: MB/s of each and the ratio ours/JS
(above 1: ours is faster). The two root CIDs are checked to be equal.

The reference is installed as the tests install it (tests/content/reference_js.py, needs
Node.js and npm).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _results import Results, add_json_option  # beside this script

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.content.reference_js import run_reference_jobs

from ipfs_accelerate.content import PROFILES, import_file


def _write_file(path: Path, size: int) -> None:
    rng = np.random.default_rng(0)
    block = 16 * 1024 * 1024
    with path.open("wb") as stream:
        left = size
        while left:
            step = min(block, left)
            stream.write(rng.bytes(step))
            left -= step


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--profile", nargs="+", default=["unixfs-v1-2025", "unixfs-v0-2015"],
        choices=sorted(PROFILES),
    )
    add_json_option(parser)
    args = parser.parse_args()
    results = Results("content")

    with tempfile.TemporaryDirectory(prefix="content-bench-") as folder:
        workdir = Path(folder)
        data = workdir / "data.bin"
        size = args.size_mb * 1024 * 1024
        _write_file(data, size)
        print(f"{'profile':<16} {'ours MB/s':>10} {'JS MB/s':>10} {'ours/JS':>8}  root")
        for profile in args.profile:
            ours_best = js_best = float("inf")
            ours_cid = js_cid = ""
            for _ in range(args.rounds):
                start = time.perf_counter()
                ours_cid = str(import_file(data, profile=profile).cid)
                ours_best = min(ours_best, time.perf_counter() - start)
                job = {"op": "bench", "path": str(data), "options": {"profile": profile},
                       "rounds": 1}
                [js] = run_reference_jobs([job], workdir)
                if "error" in js:
                    raise SystemExit(f"the reference failed: {js['error']}")
                js_cid = js["cid"]
                js_best = min(js_best, js["seconds"][0])
            if ours_cid != js_cid:
                raise SystemExit(f"{profile}: root CIDs differ: ours {ours_cid}, JS {js_cid}")
            ratio = js_best / ours_best
            megabytes = size / 1e6
            print(
                f"{profile:<16} {megabytes / ours_best:>10.0f} {megabytes / js_best:>10.0f} "
                f"{ratio:>7.2f}x  {ours_cid}"
            )
            results.ratio(
                f"cid {args.size_mb} MiB {profile}: ours/JS throughput", ratio,
                ours_s=ours_best, js_s=js_best, bytes=size,
            )
    results.write(args.json)


if __name__ == "__main__":
    main()
