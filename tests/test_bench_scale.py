"""benchmarks/bench_scale.py's table: the slope of log(time) against log(N), and none for one size."""

import math
from types import SimpleNamespace

from helpers import load_script


def test_one_size_prints_no_slope_and_two_sizes_the_log_log_slope(capsys):
    bs = load_script("bench_scale")
    assert bs.slope([1000], [2.5]) == "-"
    assert bs.slope([1000, 10_000], [2.0, 20.0]) == "1.00"           # linear: time x10 for N x10
    assert float(bs.slope([1000, 100_000], [3.0, 30.0])) == round(math.log(10) / math.log(100), 2)
    contender = SimpleNamespace(name="now")
    bs.report({("now", "info", 1000): 1.5}, None, [contender], ["info"], [1000])
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("info"))
    assert "nan" not in row and row.split()[-1] == "-"
