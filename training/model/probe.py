"""A kernel check that a crash cannot defeat: run it in a child process, remember the verdict on disk.

A CUDA illegal memory access is sticky: after one, every CUDA call of the process fails, so no ``try`` in
the process that met it recovers. ``auto`` therefore checks a candidate kernel (``flex``) in a child process
started with ``spawn`` (a fork after CUDA is initialised is not allowed), and reads the child's answer:

- the check's own answer (None: the kernel may be used; else a reason), sent back through a pipe;
- an exception in the child: "failed (Type: message)";
- a child that dies (non-zero exit, a signal such as SIGSEGV) or outlives ``timeout``: a reason saying so.

Verdicts are kept in ``<cache>/kernel-checks/`` (the local cache: ``$RAT_CACHE_DIR``, ...), one small JSON
file per setting, keyed by what can change a kernel's behaviour: PyTorch, Triton, CUDA and this package's
versions, the GPU's name and compute capability, the precision, the head size and the check's revision. So
the check runs once per machine and setting, not once per process; delete the folder to check again.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import signal
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from rat.shared import DISTRIBUTION
from rat.shared.errors import one_line
from rat.shared.index.locate import cache_dir

#: Seconds a check may take in its child (starting Python and torch, compiling the kernels, running them).
TIMEOUT = 600.0
#: Revision of the check itself: a change to what it checks invalidates the verdicts on disk.
REVISION = 2
FOLDER = "kernel-checks"


def isolated(check: Callable[..., str | None], *args: Any, timeout: float = TIMEOUT) -> str | None:
    """``check(*args)`` run in a spawned child process: its answer, or the reason it gave none.

    ``check`` and ``args`` must be picklable (a module-level function; devices, dtypes and numbers)."""
    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child, args=(send, check, args), daemon=True)
    child.start()
    send.close()  # the child holds the only write end: a dead child gives EOF, not a hang
    try:
        ready = receive.poll(timeout)
        answer = _read(receive) if ready else None
        child.join(timeout=30 if ready else 0)
    finally:
        if child.is_alive():
            child.kill()
            child.join()
        receive.close()
    if answer is not None:
        return answer[1]
    code = child.exitcode
    if not ready:
        return f"did not finish within {timeout:g} s (killed)"
    if code is not None and code < 0:
        return f"crashed (killed by signal {signal.Signals(-code).name})"
    return f"crashed (exit status {code})"


def _read(receive) -> tuple[str, str | None] | None:
    try:
        return receive.recv()
    except EOFError:  # the child died before answering
        return None


def _child(send, check: Callable[..., str | None], args: tuple) -> None:
    try:
        answer = check(*args)
    except BaseException as err:  # noqa: BLE001 - whatever happens, the parent hears it in one line
        answer = f"failed ({type(err).__name__}: {one_line(err)})"
    send.send(("answer", answer))
    send.close()


def setting(device: torch.device, dtype: torch.dtype, head_dim: int, candidate: str, reference: str
            ) -> dict[str, Any]:
    """What a verdict about ``candidate`` on ``device`` depends on."""
    key: dict[str, Any] = {"revision": REVISION, "candidate": candidate, "reference": reference,
                           "dtype": str(dtype).removeprefix("torch."), "head_dim": head_dim,
                           "torch": torch.__version__, "cuda": torch.version.cuda, "device": device.type}
    for name, distribution in (("triton", "triton"), ("rat", DISTRIBUTION)):
        try:
            key[name] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            key[name] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        key["gpu"] = props.name
        key["capability"] = f"{props.major}.{props.minor}"
    return key


def _file(key: dict[str, Any], folder: Path | None) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return (folder or cache_dir() / FOLDER) / f"{key['candidate']}-{digest}.json"


def recalled(key: dict[str, Any], folder: Path | None = None) -> tuple[bool, str | None]:
    """(found, verdict) of a check of ``key`` made before on this machine."""
    try:
        saved = json.loads(_file(key, folder).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False, None
    if saved.get("key") != key:
        return False, None
    return True, saved.get("problem")


def remember(key: dict[str, Any], problem: str | None, folder: Path | None = None) -> None:
    """Keep the verdict of a check (None: passed) for the next process; best effort (a read-only cache only
    means checking again)."""
    path = _file(key, folder)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"key": key, "problem": problem}, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
