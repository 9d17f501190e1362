"""One scoring worker of `sftmix score --workers N`: ``python -m profiler.pipeline.worker CONFIG.json [THREADS]``.

A fresh interpreter per worker (not multiprocessing's spawn, which re-runs the parent's ``__main__``): safe from
any host program, and each worker owns its GPU from the start.
"""

from __future__ import annotations

import json
import sys


def main(argv: list[str]) -> int:
    from profiler.config import ScoreConfig
    from profiler.pipeline.run import score_part

    with open(argv[0], encoding="utf-8") as f:
        cfg = ScoreConfig(**json.load(f))
    if len(argv) > 1 and argv[1] != "0":
        import torch

        torch.set_num_threads(int(argv[1]))
    score_part(cfg)  # the single run of its shard: never the dispatch again
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
