"""Child of ``benchmarks/bench_peers.py``: ``autofaiss.build_index`` on a folder of .npy vectors.

Runs in the peer's own virtual environment (``benchmarks/.peers-venv``: autofaiss pins numpy < 2,
which the project's environment cannot hold), so it imports nothing of gemseg. Prints one JSON
line: the build's seconds (around ``build_index`` only) and autofaiss's own report (index key, the
search parameters it tuned, its size).

    python peers_autofaiss.py NPY_DIR INDEX_PATH INFOS_PATH BUDGET BUILD_MEMORY [mmap]
"""
import json
import logging
import sys
import time

if __name__ == "__main__":
    npy_dir, index_path, infos_path, budget, build_memory = sys.argv[1:6]
    mmap = len(sys.argv) > 6 and sys.argv[6] == "mmap"
    from autofaiss import build_index

    t0 = time.perf_counter()
    _, infos = build_index(embeddings=npy_dir, index_path=index_path, index_infos_path=infos_path,
                           max_index_memory_usage=budget, current_memory_available=build_memory,
                           metric_type="ip", should_be_memory_mappable=mmap, verbose=logging.WARNING)
    seconds = time.perf_counter() - t0
    if infos is None:
        sys.exit("autofaiss build_index returned no index (see its log above)")
    print(json.dumps({"seconds": seconds, "infos": infos}))
