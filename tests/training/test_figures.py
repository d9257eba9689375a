"""Figures (rat.training.figures): the curves of a run mark the step of best.pt the run chose."""


from rat.training.figures import plot_curves


def records():
    val = [(2, 30.0), (4, 31.5), (6, 31.5), (8, 31.2)]
    out = [{"step": s, "kind": "train", "loss": 1.0 / s} for s in range(1, 9)]
    out += [{"step": s, "kind": "val", "split": "val", "psnr": p, "ssim": p / 40, "lq_psnr": 29.0,
             "lq_ssim": 0.7} for s, p in val]
    return out


def test_curves_show_loss_psnr_and_ssim_with_the_step_the_run_chose(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    lines = []
    real = Axes.axvline
    monkeypatch.setattr(Axes, "axvline", lambda self, x, *a, **k: lines.append(x) or real(self, x, *a, **k))
    path = plot_curves(records(), tmp_path / "curves.png", best=6)
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert lines == [6, 6, 6]                      # one mark per panel: loss, PSNR, SSIM
    lines.clear()
    plot_curves(records(), tmp_path / "curves.png")  # nothing chosen (no validation images): no mark
    assert lines == []
