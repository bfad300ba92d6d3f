"""Where a scan runs: "local" (this process, threads decode ahead) or "ray" (Ray Data
actors, each holding one runtime session; on this machine or a cluster)."""
from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import os
from typing import Iterator

import numpy as np

from ..errors import ZfcaffeError
from .job import Job, pack, unpack

ENGINES = ("local", "ray")


@dataclasses.dataclass
class Engine:
    name: str = "local"
    address: str | None = None          # a Ray cluster ("auto", "HOST:PORT"); none: a private Ray here
    actors: int | None = None            # Ray actors (default: the cluster's cores / cpus_per_actor)
    cpus_per_actor: int = 1              # cores each actor reserves and its runtime's thread count
    workers: int = 2                     # image-decoding threads (per actor with Ray)

    def map(self, job: Job, paths: list[str], first: int = 0) -> Iterator[tuple[int, int, dict]]:
        """(start, real, results) for the batches of paths[first:], in order."""
        if self.name == "local":
            return _local(job, paths, first, self.workers)
        if self.name == "ray":
            return _ray(job, paths, first, self)
        raise ZfcaffeError(f"--engine {self.name}: expected one of {', '.join(ENGINES)}")


def _starts(paths: list[str], first: int, batch: int) -> range:
    return range(first, len(paths), batch)


def _local(job: Job, paths: list[str], first: int, workers: int):
    starts = _starts(paths, first, job.batch)
    with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
        def decode(s):
            return [pool.submit(job.pre, p) for p in paths[s:s + job.batch]]
        ahead = decode(starts[0]) if starts else []
        for i, start in enumerate(starts):
            current = ahead
            ahead = decode(starts[i + 1]) if i + 1 < len(starts) else []   # decoded while this batch runs
            inputs = [f.result() for f in current]
            yield start, len(inputs), job.run(job.stack(inputs), len(inputs), start)


class _Actor:
    """A Ray Data actor: builds the job's net once, then runs batch after batch."""

    def __init__(self, job: Job, threads: int, workers: int):
        os.environ["ZFCAFFE_THREADS"] = str(threads)
        os.environ["ZFCAFFE_QUIET"] = "1"
        self.job = job
        self.pool = concurrent.futures.ThreadPoolExecutor(max(1, workers))
        job.net   # build now, not in the first batch

    def __call__(self, rows: dict) -> dict:
        out = {"start": [], "real": [], "result": [], "error": []}
        for start, paths in zip(rows["start"], rows["paths"]):
            result, error = b"", ""
            try:
                inputs = list(self.pool.map(self.job.pre, [str(p) for p in paths]))
                result = pack(self.job.run(self.job.stack(inputs), len(inputs), int(start)))
            except ZfcaffeError as e:     # bad input: one line for the driver to say, not a Ray traceback
                error, inputs = str(e), []
            out["start"].append(int(start))
            out["real"].append(len(inputs))
            out["result"].append(result)
            out["error"].append(error)
        return {"start": np.array(out["start"]), "real": np.array(out["real"]),
                "result": np.array(out["result"], dtype=object), "error": np.array(out["error"], dtype=object)}


def _ray(job: Job, paths: list[str], first: int, engine: Engine):
    try:
        import ray
        import ray.data
    except ImportError:
        raise ZfcaffeError("--engine ray needs Ray: pip install 'zfcaffe[scale]'") from None
    started = connect(ray, engine.address)
    try:
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True       # results come back in input order
        context.enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        actors = engine.actors or max(1, int(ray.cluster_resources().get("CPU", 1)) // engine.cpus_per_actor)
        items = [{"start": s, "paths": paths[s:s + job.batch]} for s in _starts(paths, first, job.batch)]
        if not items:
            return
        ds = ray.data.from_items(items, override_num_blocks=min(len(items), 200))
        ds = ds.map_batches(_Actor, fn_constructor_args=(job, engine.cpus_per_actor, engine.workers),
                            batch_size=1, batch_format="numpy", num_cpus=engine.cpus_per_actor,
                            compute=ray.data.ActorPoolStrategy(size=actors))
        for row in ds.iter_rows():
            if row["error"]:
                raise ZfcaffeError(str(row["error"]))
            yield int(row["start"]), int(row["real"]), unpack(row["result"])
    finally:
        if started:
            ray.shutdown()


def connect(ray, address: str | None) -> bool:
    """Join the cluster at `address`, or start a private Ray on this machine's loopback
    address; True when this call started Ray (and so shuts it down)."""
    if ray.is_initialized():
        return False
    quiet = dict(logging_level=logging.WARNING, log_to_driver=False, configure_logging=True)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        if address:
            ray.init(address=address, **quiet)
        else:
            ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise ZfcaffeError(f"--engine ray{' --address ' + address if address else ''}: cannot start or reach "
                           f"Ray: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return True
