"""`make demo` (.ci/demo.sh): while two runs train side by side it shows how far each has come, and
DEMO_ITERS sets their steps. Run here with stand-ins for the two commands (the real ones are tested
everywhere else): a rat-train that logs one training step per 0.3 s, as the real one logs to metrics.jsonl."""

import os
import stat
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

FAKE_TRAIN = """#!/usr/bin/env bash
case "$1" in eval|restore|compare) echo "$1 done"; exit 0;; esac
out="" iters=0
while [ $# -gt 0 ]; do
  case "$1" in --out) out="$2"; shift;; --iters) iters="$2"; shift;; esac
  shift
done
mkdir -p "$out"
for ((s = 1; s <= iters; s++)); do
  sleep 0.3
  echo "{\\"step\\": $s, \\"kind\\": \\"train\\", \\"loss\\": 0.1}" >> "$out/metrics.jsonl"
done
echo "done: $iters steps in $out"
"""


def test_the_demo_shows_the_progress_of_the_runs_training(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("rat-train", FAKE_TRAIN), ("rat-precompute", "#!/usr/bin/env bash\necho ok\n")):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod((bin_dir / name).stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "DEMO_DIR": str(tmp_path / "d"), "DEMO_ITERS": "8", "DEMO_PROGRESS_EVERY": "1"}
    env.pop("RAT_SAM_CHECKPOINT", None)
    done = subprocess.run(["bash", str(REPO / ".ci" / "demo.sh")], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert "== training pathology and ct side by side (8 steps each; a line every 1 s)" in lines
    shown = [line for line in lines if "pathology step" in line and "/8, ct step" in line]
    assert len(shown) >= 2 and shown[0].startswith("  [")                 # lines while they train
    steps = [int(line.split("pathology step ")[1].split("/")[0]) for line in shown]
    assert steps == sorted(steps) and 0 < steps[-1] <= 8
    assert any("ct-wmsa step" in line for line in lines)                  # the second pair too
