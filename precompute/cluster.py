"""Label maps on a dask.distributed cluster: the same work as `runner.run_masks`, spread over workers.

The client (the `rat-precompute masks` process) alone creates or checks the store's root record; each task
runs `runner.process_entry` for one image on a worker, which opens the store with mode "r+" and writes only
that image's keys. The generator (SAM or superpixels) is built once per worker by `GeneratorPlugin` from a
picklable `GeneratorSpec`; the client records the provenance the workers report, after checking that every
worker computes with the same generator and the checkpoint the client hashed. A task that finds its
worker's generator different from the run's fails instead of writing.

A worker that dies mid-image (SIGKILL, out of memory, lost node) costs only the images it held: the
scheduler reruns them elsewhere, and since the label map of an image is a pure function of its LQ bytes
and the configuration, a rerun writes the same bytes. An image that kills workers again and again is
reported as failed after dask's `distributed.scheduler.allowed-failures` attempts; the rest go on.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import sys
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from distributed import Client, WorkerPlugin, as_completed, get_worker

from rat.precompute.runner import finish, open_run_store, plan, process_entry
from rat.shared import store as st
from rat.shared.datasets import DatasetDef
from rat.shared.errors import ParamError, RatError, one_line
from rat.shared.hashes import sha256_file
from rat.shared.index import Entry
from rat.shared.jobs import Outcome, Reporter
from rat.shared.regions import Generator, build_generator, check_parameters, describe

#: Kinds of cluster this module starts itself.
CLUSTERS = ("local",)


class ClusterError(RatError, RuntimeError):
    """A one-line problem with the cluster (scheduler unreachable, workers cannot build the generator)."""


def _plain(value: Any) -> Any:
    """`value` as plain JSON types, the way the store records it (tuples become lists, paths strings)."""
    return json.loads(json.dumps(value, default=str))


# ---------------------------------------------------------------------------------------------------
# the generator on the workers


@dataclass(frozen=True)
class GeneratorSpec:
    """A generator by registry name and keyword arguments (all picklable), built on each worker.

    `expect` holds provenance fields the client computed itself (the checkpoint's SHA-256); a worker whose
    generator reports other values refuses to work.
    """

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    expect: dict[str, Any] = field(default_factory=dict)

    @property
    def token(self) -> str:
        """Short hash of the spec: names the worker plugin, so runs of different specs never mix."""
        return hashlib.sha256(json.dumps([self.name, _plain(self.kwargs)], sort_keys=True)
                              .encode()).hexdigest()[:12]


def generator_spec(name: str, **kwargs: Any) -> GeneratorSpec:
    """The spec of generator `name` with `kwargs`, resolved on the client.

    The checkpoint of a generator that takes one (SAM family: argument or RAT_SAM_CHECKPOINT) becomes an
    absolute path that workers must see at the same place, and its SHA-256 is computed here once; workers
    check that they loaded those bytes.
    """
    check_parameters(name, kwargs)  # a known generator and parameters it takes, of the right kinds
    info = describe(name)
    expect: dict[str, Any] = {}
    if info.takes("checkpoint"):
        path = info.checkpoint_path(kwargs.get("checkpoint"))
        if path is not None:
            path = Path(path).resolve()
            kwargs = {**kwargs, "checkpoint": str(path)}
            expect["checkpoint_sha256"] = sha256_file(path)
    return GeneratorSpec(name, dict(kwargs), expect)


class _Locked:
    """A generator whose calls are serialised (a worker with several threads shares one model)."""

    def __init__(self, generator: Generator, lock: threading.Lock) -> None:
        self._generator, self._lock = generator, lock
        self.name, self.params = generator.name, generator.params

    def provenance(self) -> dict[str, Any]:
        return self._generator.provenance()

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        with self._lock:
            return self._generator(rgb)


class GeneratorPlugin(WorkerPlugin):
    """Builds the generator once when a worker starts (or joins later, e.g. restarted after a crash).

    Setup never raises: a failure is kept in `error` and reported by `worker_states` and by each task, so
    the client prints one line instead of a worker traceback.
    """

    def __init__(self, spec: GeneratorSpec) -> None:
        self.spec = spec
        self.generator: _Locked | None = None
        self.provenance: dict[str, Any] | None = None
        self.error: str | None = None

    @property
    def name(self) -> str:
        return f"rat-generator-{self.spec.token}"

    async def setup(self, worker: Any) -> None:
        try:
            # in a thread: loading SAM takes seconds, the worker's event loop keeps answering heartbeats
            gen = await asyncio.to_thread(build_generator, self.spec.name, **self.spec.kwargs)
        except Exception as err:  # noqa: BLE001 - reported by the client as one line
            self.error = f"worker {worker.address}: {one_line(err)}"
            return
        prov = _plain(gen.provenance())
        wrong = {k: (prov.get(k), v) for k, v in self.spec.expect.items() if prov.get(k) != v}
        if wrong:
            self.error = f"worker {worker.address}: " + "; ".join(
                f"{k} {have!r} differs from the client's {want!r}" for k, (have, want) in wrong.items())
            return
        self.generator, self.provenance = _Locked(gen, threading.Lock()), prov

    def teardown(self, worker: Any) -> None:
        self.generator = None
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover - torch is a dependency
            pass


def _plugin_state(name: str, dask_worker: Any = None) -> tuple[dict[str, Any] | None, str | None]:
    plugin = dask_worker.plugins.get(name)
    if plugin is None:
        return None, f"worker {dask_worker.address}: generator plugin {name} missing"
    return plugin.provenance, plugin.error


def worker_states(client: Client, plugin_name: str) -> dict[str, tuple[dict[str, Any] | None, str | None]]:
    """(generator provenance, error) of every worker, by worker address."""
    return client.run(_plugin_state, plugin_name)


def agreed_provenance(states: dict[str, tuple[dict[str, Any] | None, str | None]]) -> dict[str, Any]:
    """The one generator provenance all workers report; ClusterError naming the first problem otherwise."""
    if not states:
        raise ClusterError("the cluster has no workers")
    errors = sorted(err for _, err in states.values() if err)
    if errors:
        more = f" (and {len(errors) - 1} more workers)" if len(errors) > 1 else ""
        raise ClusterError(f"cannot build the generator: {errors[0]}{more}")
    (first_addr, (first, _)), *rest = sorted(states.items())
    for addr, (prov, _) in rest:
        if prov != first:
            diff = st.describe_difference({"generator": first}, {"generator": prov})
            raise ClusterError(f"workers {first_addr} and {addr} build different generators ({diff}); "
                               "install the same versions everywhere")
    assert first is not None
    return first


# ---------------------------------------------------------------------------------------------------
# the task


def process_on_worker(entry: Entry, overwrite: bool, root: str, ds: DatasetDef, url: str, plugin_name: str,
                      generator_provenance: dict[str, Any], fingerprint: str, chunk: int) -> Outcome:
    """The body of one task: `process_entry` with this worker's generator; never raises. ``overwrite``:
    recompute even when the image has a complete record (the run's --overwrite, or a damaged map)."""
    try:
        worker = get_worker()
        plugin = worker.plugins.get(plugin_name)
        if plugin is None or plugin.generator is None:
            reason = plugin.error if plugin is not None else f"worker {worker.address}: no generator"
            return Outcome(entry.id, "failed", reason or "no generator")
        if plugin.provenance != generator_provenance:
            diff = st.describe_difference({"generator": generator_provenance},
                                          {"generator": plugin.provenance})
            return Outcome(entry.id, "failed",
                           f"worker {worker.address} builds another generator than the run's ({diff})")
        store = st.open_store(url, mode="r+")
        if st.provenance(store).get("fingerprint") != fingerprint:
            return Outcome(entry.id, "failed", f"{url}: the store's configuration changed during the run")
        return process_entry(entry, Path(root), ds, plugin.generator, store, overwrite, chunk, fingerprint)
    except Exception as err:  # noqa: BLE001 - every failure is one line in the summary
        hint = " (is the store reachable from every worker at the same URL/path?)" \
            if isinstance(err, st.StoreError) else ""
        return Outcome(entry.id, "failed", one_line(err) + hint)


def _lost(entry: Entry, future: Any) -> Outcome:
    """Outcome of a task that did not return (its worker kept dying, or the task was cancelled)."""
    try:
        err = future.exception()
    except Exception as exc:  # noqa: BLE001 - cancelled futures raise here
        err = exc
    from distributed.scheduler import KilledWorker

    if isinstance(err, KilledWorker):
        reason = (f"its worker died on each of {err.allowed_failures + 1} attempts, the last "
                  f"{err.last_worker.address} (out of memory? see the worker logs)")
    else:
        reason = one_line(err) if err is not None else f"task {future.status}"
    return Outcome(entry.id, "failed", reason)


def run_masks_distributed(ds: DatasetDef, entries: Iterable[Entry], root: str | Path, url: str | Path,
                          spec: GeneratorSpec, client: Client, overwrite: bool = False,
                          chunk: int = st.DEFAULT_CHUNK, progress: bool = True,
                          index: list[Entry] | None = None) -> list[Outcome]:
    """Label maps for `entries` into the store at `url` on the workers of `client`; one Outcome per entry.

    `root` and `url` must be reachable from every worker at the same path or URL (shared file system or
    object storage). Results are the bytes a single-process `run_masks` writes. ``index``: the whole index
    the entries were selected from (recorded in the store; default `entries`).
    """
    entries = list(entries)
    plugin = GeneratorPlugin(spec)
    if not client.scheduler_info().get("workers"):
        if progress:
            print("waiting for a dask worker to join ...", file=sys.stderr, flush=True)
        client.wait_for_workers(1)
    client.register_plugin(plugin, name=plugin.name)
    try:
        gen_prov = agreed_provenance(worker_states(client, plugin.name))
        url = str(url)
        if "://" not in url:
            url = str(Path(url).resolve())
        store, prov = open_run_store(ds, index if index is not None else entries, Path(root), url, gen_prov,
                                     overwrite, chunk)
        done, todo, damaged, lease = plan(store, entries, overwrite)   # a rerun ships nothing done already
        with lease:
            run = uuid.uuid4().hex[:8]
            keys = [f"rat-masks-{run}-{st.image_key(e.id)}" for e in todo]
            recompute = [overwrite or e.id in damaged for e in todo]  # a damaged map's record is complete
            futures = client.map(process_on_worker, todo, recompute, key=keys, pure=False,
                                 root=str(Path(root).resolve()), ds=ds, url=url, plugin_name=plugin.name,
                                 generator_provenance=gen_prov, fingerprint=prov["fingerprint"], chunk=chunk)
            position = {e.id: i for i, e in enumerate(entries)}
            by_key = {f.key: (position[e.id], e) for f, e in zip(futures, todo, strict=True)}
            outcomes: list[Outcome | None] = [done.get(e.id) for e in entries]
            with Reporter(len(todo), "label maps", progress) as reporter:
                for future in as_completed(futures):
                    i, entry = by_key[future.key]
                    outcome = future.result() if future.status == "finished" else _lost(entry, future)
                    future.release()
                    outcomes[i] = reporter.add(outcome)
            for o in finish(store, [outcomes[position[e.id]] for e in todo], damaged):
                outcomes[position[o.image_id]] = o
    finally:
        try:
            client.unregister_worker_plugin(plugin.name)
        except Exception:  # noqa: BLE001 - workers gone already; nothing to free
            pass
    return [o for o in outcomes if o is not None]


# ---------------------------------------------------------------------------------------------------
# clusters


def visible_gpus() -> list[str]:
    """GPUs this process may use: CUDA_VISIBLE_DEVICES if set, else every device torch counts."""
    text = os.environ.get("CUDA_VISIBLE_DEVICES")
    if text is not None:
        gpus = [g.strip() for g in text.split(",") if g.strip()]
        return [] if gpus[:1] == ["-1"] else gpus
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def worker_envs(n_workers: int, gpus: Sequence[str], cpus: int | None = None) -> list[dict[str, str]]:
    """Environment of each local worker: its own GPU (round-robin when there are more workers than GPUs);
    without GPUs an equal share of the CPU cores for torch's threads."""
    if gpus:
        return [{"CUDA_VISIBLE_DEVICES": str(gpus[i % len(gpus)])} for i in range(n_workers)]
    share = str(max(1, (cpus or os.cpu_count() or 1) // n_workers))
    return [{"OMP_NUM_THREADS": share, "MKL_NUM_THREADS": share, "OPENBLAS_NUM_THREADS": share}
            for _ in range(n_workers)]


def local_cluster(n_workers: int | None = None, gpus: Sequence[str] | None = None,
                  threads_per_worker: int = 1, silence_logs: int = logging.ERROR) -> Any:
    """Worker processes on this machine, each under a nanny that restarts it if it dies.

    One worker per GPU by default, each pinned to its GPU through CUDA_VISIBLE_DEVICES (dask-cuda's
    LocalCUDACluster when installed and there are no more workers than GPUs); without GPUs one worker
    by default, and n workers share the cores. `gpus` overrides the detected devices ([] = CPU only).
    """
    from distributed import Nanny, Scheduler, SpecCluster
    from distributed.worker_memory import parse_memory_limit

    gpus = visible_gpus() if gpus is None else list(gpus)
    n = n_workers if n_workers is not None else max(1, len(gpus))
    if n < 1:
        raise ParamError("n_workers", f"{n}: need at least one worker")
    if gpus and n <= len(gpus):
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError:
            pass
        else:
            return LocalCUDACluster(n_workers=n, CUDA_VISIBLE_DEVICES=list(gpus[:n]),
                                    threads_per_worker=threads_per_worker, silence_logs=silence_logs,
                                    dashboard_address=None)
    memory = parse_memory_limit("auto", 1, n, logger=logging.getLogger(__name__))
    options = {"host": "127.0.0.1", "protocol": "tcp://", "silence_logs": silence_logs,
               "nthreads": threads_per_worker, "memory_limit": memory}
    workers = {i: {"cls": Nanny, "options": {**options, "env": env}}
               for i, env in enumerate(worker_envs(n, gpus))}
    scheduler = {"cls": Scheduler, "options": {"host": "127.0.0.1", "protocol": "tcp://", "port": 0,
                                               "dashboard": False, "dashboard_address": None}}
    return SpecCluster(workers=workers, scheduler=scheduler, silence_logs=silence_logs,
                       name="rat-precompute")


@contextmanager
def connect(scheduler: str | None = None, cluster: str | None = None, workers: int | None = None,
            timeout: str = "30s") -> Iterator[Client]:
    """A client of an existing scheduler or of a new local cluster (`cluster="local"`).

    `scheduler` is an address (tcp://host:8786) or the JSON file `dask scheduler --scheduler-file` writes.
    """
    if scheduler and cluster:
        raise ParamError("scheduler", "an existing scheduler and a new cluster exclude each other")
    if scheduler:
        if workers is not None:
            raise ParamError("workers", "applies to a new local cluster; an existing one has its own workers")
        try:
            client = (Client(scheduler_file=scheduler, timeout=timeout) if Path(scheduler).is_file()
                      else Client(scheduler, timeout=timeout))
        except (OSError, TimeoutError, ValueError) as err:
            raise ClusterError(f"{scheduler}: cannot reach a dask scheduler ({one_line(err)})") from None
        with client:
            yield client
        return
    if cluster is None:
        raise ParamError("workers", "applies to a new local cluster: add cluster='local'")
    if cluster not in CLUSTERS:
        raise ParamError("cluster", f"{cluster!r}: choose one of {', '.join(CLUSTERS)}")
    with local_cluster(workers) as local, Client(local) as client:
        yield client
