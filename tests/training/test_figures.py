"""Figures (rat.training.figures): the curves of a run mark the step of best.pt."""


from rat.training.figures import best_step, plot_curves


def records():
    val = [(2, 30.0), (4, 31.5), (6, 31.5), (8, 31.2)]                 # a tie: the first one is kept
    out = [{"step": s, "kind": "train", "loss": 1.0 / s} for s in range(1, 9)]
    out += [{"step": s, "kind": "val", "split": "val", "psnr": p, "ssim": p / 40, "lq_psnr": 29.0,
             "lq_ssim": 0.7} for s, p in val]
    return out


def test_best_step_is_the_first_of_the_highest_validation_psnr():
    assert best_step(records()) == 4
    assert best_step([r for r in records() if r["kind"] == "train"]) is None


def test_curves_show_loss_psnr_and_ssim_with_the_best_step(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    lines = []
    real = Axes.axvline
    monkeypatch.setattr(Axes, "axvline", lambda self, x, *a, **k: lines.append(x) or real(self, x, *a, **k))
    path = plot_curves(records(), tmp_path / "curves.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert lines == [4, 4, 4]                      # one mark per panel: loss, PSNR, SSIM
