"""The study's own claim, in the default run: deeper plain nets train worse, residual twins do not.

A fast version of the quick preset (the slow full one is in test_report.py): depth 8 vs 44, one seed,
80 iterations of batch 32 at lr 0.025 (about 10 s on 2 cores; an early-training gap, not the preset's converged one). Measured over seeds 0-2: plain-8 0.6-1.6%, plain-44 73-83%,
residual-44 3-6% final training error; the bounds below leave wide margins and still fail if the
degradation (or the residual fix) disappears.
"""

from depthstudy.report import make_report


class _Quiet:
    def print(self, *args, **kwargs):
        pass


def test_plain_nets_degrade_with_depth_and_residual_nets_do_not(cli, tmp_path):
    result = cli("sweep", "experiment=quick", "model.depth=8,44", "seed=0", "schedule.iterations=80",
                 "schedule.milestones=[60,70]", "optim.batch_size=32", "optim.lr=0.025", "trainer.eval_every=0", "trainer.progress=none")
    assert result.exit_code == 0, result.output
    report = make_report(tmp_path / "runs" / "quick", None, [], ["png"], console=_Quiet())
    final = {(g.family, g.depth): g.median("train") for g in report["groups"]}
    assert final[("plain", 44)] > final[("plain", 8)] + 40
    assert final[("residual (A)", 44)] < final[("plain", 44)] - 40
    assert final[("residual (A)", 44)] < 20
