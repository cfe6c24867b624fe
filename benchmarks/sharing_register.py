"""Cost of registering weights with the tensor-sharing manager, beside its floor, in one run.

    python benchmarks/sharing_register.py [--sizes-mb 1 64 256] [--repeat 5]

Registering ``data=`` hashes the bytes once (sha256, for the content id) and copies nothing,
so its floor is ``hashlib.sha256`` over the same buffer; a second registration of identical
weights (a dedup hit) also compares the bytes with the held copy. Printed: median times and
the ratios ours/sha256, plus what a plain numpy copy of the weights costs for scale.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import time
from collections.abc import Callable

import numpy as np
from _results import Results, add_json_option  # beside this script

from ipfs_accelerate.sharing import TensorSharingManager, content_id


def median_time(fn: Callable[[], object], repeat: int) -> float:
    fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes-mb", type=int, nargs="+", default=[1, 64, 256])
    parser.add_argument("--repeat", type=int, default=5)
    add_json_option(parser)
    args = parser.parse_args()
    results = Results("sharing_register")

    print(
        f"{'size':>8} {'sha256':>10} {'np.copy':>10} {'content_id':>11} {'register':>10} "
        f"{'dedup hit':>10}"
        f" {'reg/sha':>8} {'hit/sha':>8}"
    )
    for size_mb in args.sizes_mb:
        weights = np.random.default_rng(0).standard_normal(
            size_mb * 1024 * 1024 // 4, dtype=np.float32
        )
        twin = weights.copy()  # a second pipeline's load of the same checkpoint

        sha = median_time(lambda: hashlib.sha256(weights.data).digest(), args.repeat)  # noqa: B023
        copy = median_time(lambda: weights.copy(), args.repeat)  # noqa: B023
        cid = median_time(lambda: content_id(weights), args.repeat)  # noqa: B023

        def register_new() -> None:
            TensorSharingManager().register_shared_tensor("w", weights.shape, data=weights)  # noqa: B023

        manager = TensorSharingManager()
        manager.register_shared_tensor("w", weights.shape, data=weights)
        counter = iter(range(10**9))

        def register_twin() -> None:
            held = manager.register_shared_tensor(f"twin{next(counter)}", twin.shape, data=twin)  # noqa: B023
            assert held.name == "w"

        new = median_time(register_new, args.repeat)
        hit = median_time(register_twin, args.repeat)
        print(
            f"{size_mb:>6}MB {sha * 1e3:>8.2f}ms {copy * 1e3:>8.2f}ms {cid * 1e3:>9.2f}ms "
            f"{new * 1e3:>8.2f}ms "
            f"{hit * 1e3:>8.2f}ms {new / sha:>7.2f}x {hit / sha:>7.2f}x"
        )
        times = {"sha256_s": sha, "copy_s": copy, "content_id_s": cid}
        results.ratio(
            f"register {size_mb} MB: register/sha256",
            new / sha,
            higher_is_better=False,
            register_s=new,
            **times,
        )
        results.ratio(
            f"dedup hit {size_mb} MB: hit/sha256",
            hit / sha,
            higher_is_better=False,
            hit_s=hit,
            **times,
        )
    results.write(args.json)


if __name__ == "__main__":
    main()
