"""A rank that dies: torchrun restarts the workers, and the run ends as if nothing had happened.

    python benchmarks/kill_rank.py                    # kill rank 1 at step 4, then rank 0 at step 10 (of 20)
    python benchmarks/kill_rank.py --kills 1@3 --iters 8 --workers 0

Two runs of one tiny training (the sample dataset's CT group, rat-small of width 8, 32 x 32 patches, batch
2 per rank, lr 1e-3) under ``torchrun --nproc_per_node 2 --standalone --max-restarts K ... rat-train ...
--resume --save-every 1`` on the CPU (gloo): one left alone, one in which a rank is killed with SIGKILL from
outside, once ``metrics.jsonl`` shows step k (``--kills RANK@STEP,...``: one kill per attempt of the worker
group, K kills). The killed run passes when:

- torchrun stops the surviving rank (and the DataLoader workers) by itself and starts both again, K times,
  and the job exits 0 at the last step, with no process of it left behind;
- the first attempt, started with ``--resume`` and no ``last.pt``, starts fresh, and every restarted attempt
  resumes from a ``last.pt`` (the step each attempt resumed from is printed);
- no temporary file is left in the run folder;
- its final weights (``last.pt``) equal the undisturbed run's bit for bit, and so do its training losses
  step by step (``metrics.jsonl``).

Prints the seconds of each run, each kill (rank, pid, step seen, how long until torchrun had stopped the
other rank), the max |difference| of the weights and of the losses, and PASS (exit 0) or FAIL (exit 1).
Linux only (the workers are found through /proc). About 1.5-2.5 minutes on 2 busy cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import torch

BIN = Path(sys.executable).parent
MARK = "RAT_KILL_RANK_JOB"  # in the environment of every process of a job (inherited), with the job's id
SETTINGS = ["--group", "ct", "--model", "rat-small", "--width", "8", "--patch-size", "32",
            "--batch-size", "2", "--lr", "1e-3", "--val-limit", "1", "--eval-every", "5", "--save-every", "1",
            "--log-every", "1", "--no-progress", "--resume"]


def processes(job: str) -> dict[int, dict[str, str]]:
    """The processes of ``job``: pid -> {"ppid", "rank", "attempt"} (rank and attempt from torchrun's
    environment; DataLoader workers inherit them, so the parent tells a rank from its workers)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = dict(v.split("=", 1) for v in (entry / "environ").read_text().split("\0") if "=" in v)
            stat = (entry / "stat").read_text()
        except OSError:  # gone, or not ours
            continue
        if env.get(MARK) != job:
            continue
        found[int(entry.name)] = {"ppid": stat.rsplit(")", 1)[1].split()[1], "rank": env.get("RANK"),
                                  "attempt": env.get("TORCHELASTIC_RESTART_COUNT")}
    return found


def ranks(job: str, agent: int) -> dict[tuple[str, str], int]:
    """(rank, attempt) -> pid of the rank processes (children of the torchrun agent)."""
    return {(p["rank"], p["attempt"]): pid for pid, p in processes(job).items() if p["ppid"] == str(agent)}


def train_steps(out: Path) -> dict[int, float]:
    """Step -> training loss in the run's metrics.jsonl (a line being written is skipped)."""
    steps = {}
    path = out / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("kind") == "train":
            steps[record["step"]] = record["loss"]
    return steps


def wait_for(condition, timeout: float, agent: subprocess.Popen, what: str):
    """Poll ``condition`` until it returns something true; RuntimeError if the job ends or time runs out."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        if agent.poll() is not None:
            raise RuntimeError(f"the job ended (exit {agent.returncode}) while waiting for {what}")
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


def launch(args, data: Path, store: Path, out: Path, restarts: int, job: str, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
               "--max-restarts", str(restarts), str(BIN / "rat-train"), "--masks", str(store), "--root",
               str(data), "--out", str(out), "--iters", str(args.iters), "--workers", str(args.workers),
               *SETTINGS]
    env = {**os.environ, MARK: job, "OMP_NUM_THREADS": "1", "RAT_CACHE_DIR": str(out.parent / "cache")}
    with open(log, "w") as fh:
        return subprocess.Popen(command, stdout=fh, stderr=subprocess.STDOUT, env=env)


def kill_during(agent: subprocess.Popen, job: str, out: Path, kills: list[tuple[str, int]], done: list[dict]):
    """Kill rank r once the log shows step k, one kill per attempt; appends what happened to ``done``."""
    seen = 0
    for attempt, (rank, step) in enumerate(kills):
        target = max(step, seen + 1)  # a step this attempt logged, not one left by the previous attempt
        pid = wait_for(lambda a=str(attempt), r=rank: ranks(job, agent.pid).get((r, a)), 300, agent,
                       f"rank {rank} of attempt {attempt}")
        at = wait_for(lambda t=target: max((s for s in train_steps(out) if s >= t), default=None), 300,
                      agent, f"step {target}")
        os.kill(pid, signal.SIGKILL)
        t0 = time.monotonic()
        wait_for(lambda a=str(attempt): not any(a == att for _, att in ranks(job, agent.pid)), 120, agent,
                 f"torchrun to stop the other rank of attempt {attempt}")
        stopped = time.monotonic() - t0
        seen = max(train_steps(out), default=0)
        done.append({"rank": rank, "pid": pid, "step": at, "stopped_s": stopped, "last_step": seen})


def leftovers(job: str, grace: float = 20.0) -> list[int]:
    """Processes of the job still alive ``grace`` seconds after it ended (orphaned DataLoader workers notice
    that their parent died within about 5 s)."""
    end = time.monotonic() + grace
    while processes(job) and time.monotonic() < end:
        time.sleep(0.5)
    return sorted(processes(job))


def run_job(args, data, store, out, kills) -> dict:
    job = uuid.uuid4().hex
    log = out.parent / f"{out.name}.log"
    t0 = time.perf_counter()
    agent = launch(args, data, store, out, len(kills), job, log)
    result: dict = {"kills": [], "problems": []}
    try:
        kill_during(agent, job, out, kills, result["kills"])
        agent.wait(timeout=600)
    except (RuntimeError, subprocess.TimeoutExpired) as err:
        result["problems"].append(str(err))
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    result["seconds"] = time.perf_counter() - t0
    result["exit"] = agent.returncode
    result["left"] = leftovers(job)
    for pid in result["left"]:  # ours: started by this script, found by its job id
        os.kill(pid, signal.SIGKILL)
    text = log.read_text()
    result["resumed"] = [int(s) for s in re.findall(r"resuming \S+ at step (\d+)", text)]
    result["log"] = text
    result["temporaries"] = sorted(p.name for p in out.glob(".*.tmp"))
    return result


def parse_kills(text: str) -> list[tuple[str, int]]:
    kills = []
    for item in filter(None, text.split(",")):
        rank, _, step = item.partition("@")
        if rank not in ("0", "1") or not step.isdigit():
            raise SystemExit(f"--kills: {item!r} is not RANK@STEP with RANK 0 or 1")
        kills.append((rank, int(step)))
    return kills


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", default="1@4,0@10", help="RANK@STEP,...: one kill per attempt")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers per rank")
    parser.add_argument("--work", type=Path, default=None, help="folder for data and runs (default: a new "
                                                                "temporary folder)")
    args = parser.parse_args()
    kills = parse_kills(args.kills)
    if kills and max(s for _, s in kills) >= args.iters:
        raise SystemExit("--kills: every step must be below --iters")
    work = args.work or Path(tempfile.mkdtemp(prefix="kill_rank_"))
    work.mkdir(parents=True, exist_ok=True)
    data, store = work / "data", work / "sample.zarr"
    quiet = {"stdout": subprocess.DEVNULL, "check": True}
    subprocess.run([str(BIN / "rat-precompute"), "sample-data", str(data)], **quiet)
    subprocess.run([str(BIN / "rat-precompute"), "masks", "--dataset", "sample", "--root", str(data),
                    "--generator", "superpixels", "--masks", str(store), "--no-progress"], **quiet)
    print(f"torch {torch.__version__}, 2 ranks (gloo), {args.iters} steps, {args.workers} DataLoader "
          f"worker(s) per rank, in {work}")

    ref = run_job(args, data, store, work / "reference", [])
    print(f"reference: exit {ref['exit']}, {ref['seconds']:.1f} s")
    hit = run_job(args, data, store, work / "killed", kills)
    print(f"killed run: exit {hit['exit']}, {hit['seconds']:.1f} s, {len(hit['kills'])} kill(s), "
          f"attempts resumed from steps {hit['resumed'] or 'none'}")
    for i, k in enumerate(hit["kills"]):
        print(f"  attempt {i}: SIGKILL to rank {k['rank']} (pid {k['pid']}) at step {k['step']}; torchrun "
              f"stopped the other rank {k['stopped_s']:.1f} s later (its log then ended at step "
              f"{k['last_step']})")

    problems = [f"reference: {p}" for p in ref["problems"]] + [f"killed run: {p}" for p in hit["problems"]]
    for name, r in (("reference", ref), ("killed run", hit)):
        if r["exit"] != 0:
            problems.append(f"{name}: torchrun exited {r['exit']}; the end of its log:\n{r['log'][-3000:]}")
        if r["left"]:
            problems.append(f"{name}: processes left behind: {r['left']}")
        if r["temporaries"]:
            problems.append(f"{name}: temporary files left: {r['temporaries']}")
    if len(hit["resumed"]) != len(kills):
        problems.append(f"expected {len(kills)} resumed attempt(s) (the first starts fresh), the log shows "
                        f"{len(hit['resumed'])}")
    elif any(r < 1 or r > k["last_step"] for r, k in zip(hit["resumed"], hit["kills"], strict=True)):
        problems.append("an attempt resumed from a step its predecessor had not reached")
    weight_diff = loss_diff = float("nan")
    tensors = 0
    if not problems:
        a, b = (torch.load(work / run / "last.pt", map_location="cpu", weights_only=True)
                for run in ("reference", "killed"))
        if a["step"] != args.iters or b["step"] != args.iters:
            problems.append(f"last.pt at steps {a['step']} and {b['step']}, not {args.iters}")
        weight_diff = max(float((a["model"][k] - b["model"][k]).abs().max()) for k in a["model"])
        tensors = len(a["model"])
        la, lb = train_steps(work / "reference"), train_steps(work / "killed")
        if sorted(la) != list(range(1, args.iters + 1)) or sorted(lb) != sorted(la):
            problems.append(f"logged steps differ: {sorted(la)} vs {sorted(lb)}")
        else:
            loss_diff = max(abs(la[s] - lb[s]) for s in la)
        if weight_diff != 0.0 or loss_diff != 0.0:
            problems.append("the killed run does not end where the undisturbed one does")
    print(f"max |weight difference| {weight_diff:.3e} over {tensors} tensors, "
          f"max |loss difference| {loss_diff:.3e} over {args.iters} steps")
    for p in problems:
        print(f"problem: {p}")
    print("FAIL" if problems else "PASS")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
