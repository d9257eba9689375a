"""`make gpu-check` (benchmarks/gpu_check.py): without CUDA it checks nothing, says so in one line and exits
3; with CUDA every step runs, bounded in time, a step that needs another's output is skipped when that
failed, and the exit status is 1 when any step failed. The GPU steps themselves need a GPU."""

import os
import subprocess
import sys
import time
from pathlib import Path

from helpers import BENCHMARKS, load_script

SCRIPT = BENCHMARKS / "gpu_check.py"


def test_without_cuda_every_gpu_step_is_skipped_with_the_reason_and_exit_status_3(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no GPU, even on a machine that has one
    proc = subprocess.run([sys.executable, str(SCRIPT), "--work", str(tmp_path / "work")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    steps = ("cuda", "data", "tests", "bench", "train", "masks")
    rows = [line.split()[:3] for line in lines if line.split()[:1] in ([s] for s in steps)]
    assert rows == [[step, "SKIP", "0.0"] for step in steps]
    assert "  no CUDA: torch " in next(line for line in lines if line.startswith("cuda "))
    assert lines[-1].startswith("no CUDA: skipped data, tests, bench, train, masks (torch ")
    assert lines[-1].endswith("; exit status 3")
    assert not (tmp_path / "work").exists()  # nothing written


def test_failed_steps_give_status_1_and_skip_the_steps_that_need_them(tmp_path, monkeypatch, capsys):
    gc = load_script("gpu_check")
    ran = []

    def step(name, status):
        def method(self):
            ran.append(name)
            return status, f"{name} figure", f"{name} log line"
        return method

    for name, status in (("cuda", "PASS"), ("data", "FAIL"), ("tests", "PASS"), ("bench", "PASS"),
                         ("train", "PASS"), ("masks", "PASS")):
        monkeypatch.setattr(gc.Check, name, step(name, status))
    assert gc.main(["--work", str(tmp_path)]) == 1
    assert ran == ["cuda", "data", "tests", "bench"]
    out = capsys.readouterr().out
    assert "-- end of the data log" in out and "data log line" in out
    table = out[out.index("step   status"):].splitlines()
    assert [row.split()[:2] for row in table[1:7]] == [
        ["cuda", "PASS"], ["data", "FAIL"], ["tests", "PASS"], ["bench", "PASS"], ["train", "SKIP"],
        ["masks", "SKIP"]]
    assert table[5].endswith("needs the data step")
    results = [gc.Result("cuda", "PASS", 1.0, ""), gc.Result("tests", "PASS", 2.0, "")]
    assert gc.exit_status(results, cuda=True) == 0
    assert gc.exit_status(results[:1], cuda=False) == 3


def test_a_step_past_its_bound_is_killed_with_the_processes_it_started(tmp_path):
    gc = load_script("gpu_check")
    pid_file = tmp_path / "child.pid"
    script = (f"import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; "
              f"time.sleep(60)']); open({str(pid_file)!r}, 'w').write(str(p.pid)); "
              "print('started', flush=True); time.sleep(60)")
    t0 = time.perf_counter()
    code, out = gc.run([sys.executable, "-c", script], tmp_path / "step.log", timeout=3)
    assert code is None and out.startswith("started") and time.perf_counter() - t0 < 30
    child = int(pid_file.read_text())
    for _ in range(50):  # the grandchild was killed too (the step's process group)
        if not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"process {child} outlived its step")


BENCH_OUT = """torch 2.11.0+cu130, NVIDIA H200; batch 8 of 256 x 256, ...
  authors fp32: 567.0 ms, 77.80 GB
  ours: default: 50.1 ms, 4.90 GB

floor: 6.00 TFLOP outside attention + 0.40 TFLOP within regions at 790 TFLOP/s (matmul measured here) = 8 ms

contender                       ms/step  x faster  peak GB  x less  floor %  max|out-base|
authors fp32                      567.0      1.00    77.80     1.0      1.4       0.00e+00
ours: default                      50.1     11.32     4.90    15.9     16.2       7.31e-03
ours: memory none                  40.0     14.18     7.00    11.1     20.3       7.31e-03
"""

def test_the_bench_step_reads_the_default_row_and_fails_on_a_failed_contender():
    gc = load_script("gpu_check")
    status, figure = gc.bench_result(BENCH_OUT)
    assert status == "PASS"
    assert figure == ("default step 50.1 ms, 4.90 GB: 11.32x faster, 15.9x less memory than the authors' "
                      "fp32 step; 16.2 % of the FLOP floor")
    failed = "ours: dense, eager              failed: CUDA out of memory\n"
    status, figure = gc.bench_result(BENCH_OUT + failed)
    assert status == "FAIL" and figure.endswith("; ours: dense, eager failed: CUDA out of memory")
    assert gc.bench_result("Traceback ...")[0] == "FAIL"
