import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from rdfer.config import OptimConfig, load_config
from rdfer.errors import ConfigError
from rdfer.experiments.baselines.agreement import AgreementSelector
from rdfer.experiments.baselines.confident import confident_off_diagonal
from rdfer.experiments.baselines.coteaching import CoTeachingSelector, small_loss_mask
from rdfer.experiments.baselines.exclusion import rank_correlation
from rdfer.experiments.baselines.oracle import OracleSelector
from rdfer.robust.categories import EASY, HARD, NOISY
from rdfer.robust.gmm import gmm2
from rdfer.robust.loss import rdfer_loss, weighted_ce
from rdfer.robust.selection import SelectionSelector, make_selector
from rdfer.robust.selector import renormalised
from rdfer.robust.stats import (
    LOSS,
    MARGIN,
    PROBS,
    ROW_FIELDS,
    VIEW_OTHER,
    WRONG,
    SampleStats,
    sample_rows,
)


def test_weighted_ce_by_hand():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    target = torch.tensor([0, 1])
    weight = torch.tensor([1.0, 0.1])
    ce0 = -math.log(math.exp(2) / (math.exp(2) + 1))
    ce1 = math.log(2)
    assert float(weighted_ce(logits, target, weight, 0.0)) == pytest.approx((ce0 + 0.1 * ce1) / 2)


def test_weighted_ce_uses_label_smoothing_and_instances_take_the_video_target():
    torch.manual_seed(0)
    inst = torch.randn(3, 4, 5)
    target = torch.tensor([1, 4, 0])
    weight = torch.tensor([1.0, 2.0, 0.5])
    expected = torch.stack(
        [F.cross_entropy(inst[i], target[i].expand(4), label_smoothing=0.1) for i in range(3)]
    )
    assert float(weighted_ce(inst, target, weight, 0.1)) == pytest.approx(
        float((weight * expected).mean()), rel=1e-6
    )
    plain = F.cross_entropy(inst[:, 0], target)
    assert float(weighted_ce(inst[:, 0], target, torch.ones(3), 0.0)) == pytest.approx(float(plain), rel=1e-6)


def test_total_loss_is_the_specs_weighted_sum():
    torch.manual_seed(1)
    out = {
        "detail_video_logits": torch.randn(2, 7),
        "synopsis_video_logits": torch.randn(2, 7),
        "synopsis_instance_logits": torch.randn(2, 16, 7),
        "detail_instance_logits": torch.randn(2, 4, 7),
        "key_positions": torch.tensor([[1.5, 9.5, 30.5, 60.0]] * 2),
        "predicted_positions": torch.tensor([[0.0, 9.5, 33.5, 63.0]] * 2),
    }
    y, w, cfg = torch.tensor([3, 5]), torch.tensor([1.0, 1.5]), OptimConfig()
    total, parts = rdfer_loss(out, y, w, cfg, num_frames=64)
    ce = lambda k: weighted_ce(out[k], y, w, 0.1)  # noqa: E731
    l1 = (1.5 + 0 + 3 + 3) / 4 / 63
    expected = (
        ce("detail_video_logits")
        + 0.1 * ce("synopsis_video_logits")
        + 0.1 * 0.5 * (ce("synopsis_instance_logits") + ce("detail_instance_logits"))
        + 0.1 * l1
    )
    assert float(total) == pytest.approx(float(expected), rel=1e-6)
    assert float(parts["position"]) == pytest.approx(l1, rel=1e-6)


def test_agreement_selector_assesses_purely_commits_where_ok_and_lists_noisy(tmp_path):
    robust = load_config(None, ["robust.enabled=true", "robust.warmup=0", "robust.noisy_weight=0.1"]).robust
    sel = AgreementSelector(robust, 4, epochs=10)
    assert sel.warm  # no warm-up: the weights apply from the first step
    # sample 0: all clips say class 1, label 1 -> easy; sample 1: all say 2, label 0 with no support -> noisy;
    # sample 2: clips split 2-2 -> hard.
    logits = torch.full((3, 4, 3), -20.0)
    logits[0, :, 1] = 20
    logits[1, :, 2] = 20
    logits[2, :2, 0] = 20
    logits[2, 2:, 1] = 20
    out = {"detail_instance_logits": logits, "logits": logits.mean(1)}
    labels, ids = torch.tensor([1, 0, 0]), torch.tensor([0, 1, 2])
    assessed = sel.assess(out, labels, ids)
    assert assessed.category.tolist() == [EASY, NOISY, HARD]
    assert assessed.weight.tolist() == pytest.approx([1.0, 0.1, 1.5])
    assert torch.isnan(sel.ema).all() and (sel.category == -1).all()  # assessing stores nothing

    sel.commit(ids, torch.zeros_like(assessed.rows), torch.tensor(False))  # a non-finite step: no trace
    assert torch.isnan(sel.ema).all() and (sel.category == -1).all()
    sel.commit(ids, assessed.rows, torch.tensor(True))
    assert sel.shares() == pytest.approx({"easy": 1 / 3, "hard": 1 / 3, "noisy": 1 / 3})
    assert torch.isnan(sel.ema[3]).all()  # never seen

    path = tmp_path / "noisy.csv"
    assert sel.write_noisy(path, ["a", "b", "c", "d"], [1, 0, 0, 2], ("x", "y", "z")) == 1
    lines = path.read_text().splitlines()
    assert lines[0] == "sample_id,key,given_label,network_class,noise_score"
    assert lines[1] == "1,b,x,z,1.0000"  # given x, the clips say z; A = 1, S = 0: the highest score

    sel.end_epoch(0)
    restored = AgreementSelector(robust, 4, epochs=10)
    restored.load_state_dict(sel.state_dict())
    assert torch.equal(restored.category, sel.category) and restored.warm
    with pytest.raises(ValueError, match="holds 4 samples"):
        AgreementSelector(robust, 5, epochs=10).load_state_dict(sel.state_dict())


def test_agreement_selector_warms_up_after_its_share_of_the_epochs():
    sel = AgreementSelector(
        load_config(None, ["robust.enabled=true", "robust.warmup=0.3"]).robust, 4, epochs=10
    )
    warm = []
    for epoch in range(5):
        warm.append(sel.warm)
        assert sel.end_epoch(epoch).fields == {"warm": sel.warm}
    assert warm == [False, False, False, True, True]


# ------------------------------------------------------------------------------------- shared statistics


def test_sample_rows_by_hand():
    logits = torch.tensor([[2.0, 0.0, 1.0], [0.0, 3.0, 0.0]])
    views = torch.full((2, 2, 3), -30.0)
    views[0, :, 0] = 30  # sample 0: both clips say class 0 (its label)
    views[1, 0, 1], views[1, 1, 2] = 30, 30  # sample 1: one clip says 1, one says 2; label 0
    rows = sample_rows({"logits": logits, "detail_instance_logits": views}, torch.tensor([0, 0]))
    assert rows.shape == (2, len(ROW_FIELDS) + 3)
    p = logits.softmax(1)
    assert rows[:, LOSS].tolist() == pytest.approx((-p[:, 0].log()).tolist())
    assert rows[:, MARGIN].tolist() == pytest.approx([1.0, -3.0])  # label logit minus the best other
    assert rows[:, WRONG].tolist() == [0.0, 1.0]
    assert rows[:, VIEW_OTHER].tolist() == pytest.approx([-1.0, 0.5], abs=1e-6)
    assert torch.allclose(rows[:, PROBS:], p)


def test_sample_stats_sum_per_epoch_where_ok_and_read_any_window():
    stats = SampleStats(3)
    ids, ones = torch.tensor([0, 0, 2]), torch.ones(3, 2)
    stats.add(ids, ones, torch.tensor([1, 1, 2]), torch.tensor(True))  # sample 0 twice in one epoch
    stats.add(ids, torch.full((3, 2), float("nan")), torch.tensor([5, 5, 5]), torch.tensor(False))  # no trace
    stats.close_epoch()
    stats.add(torch.tensor([0, 1]), torch.full((2, 2), 4.0), torch.tensor([1, 0]), torch.tensor(True))
    stats.close_epoch()
    assert stats.epochs == 2 and stats.labels.tolist() == [1, 0, 2]
    whole = stats.mean()
    assert whole[:, 0].tolist() == pytest.approx([2.0, 4.0, 1.0])  # (1 + 1 + 4) / 3; 4; 1
    assert stats.mean(1)[:, 0][:2].tolist() == [4.0, 4.0] and stats.mean(1)[2].isnan().all()
    restored = SampleStats(3)
    restored.load_state_dict(stats.state_dict())
    assert torch.allclose(restored.mean(), whole, equal_nan=True)
    with pytest.raises(ValueError, match="hold 3 samples"):
        SampleStats(4).load_state_dict(stats.state_dict())


def test_renormalised_weights_keep_the_batch_size_within_the_cap():
    w = renormalised(torch.tensor([1.0, 0.0, 1.0, 1.0]), cap=2.0)
    assert w.tolist() == pytest.approx([4 / 3, 0, 4 / 3, 4 / 3])
    assert renormalised(torch.tensor([1.0, 0.0, 0.0, 0.0]), cap=2.0).tolist() == [2.0, 0, 0, 0]
    assert renormalised(torch.zeros(3), cap=2.0).tolist() == [0, 0, 0]


def test_gmm2_finds_the_high_component():
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(700, generator=g) * 0.3 + 0.5, torch.randn(300, generator=g) * 0.5 + 3.0])
    m = gmm2(x)
    assert m.weight_high == pytest.approx(0.3, abs=0.02)
    assert m.means[0] == pytest.approx(0.5, abs=0.05) and m.means[1] == pytest.approx(3.0, abs=0.1)
    assert ((m.high > 0.5) == (torch.arange(1000) >= 700)).float().mean() > 0.99
    assert gmm2(torch.ones(5)).weight_high == 0.0 and not gmm2(torch.ones(5)).high.any()


def test_confident_off_diagonal_by_hand():
    probs = torch.tensor([[0.9, 0.1], [0.7, 0.3], [0.2, 0.8], [0.6, 0.4], [0.5, 0.5]])
    labels = torch.tensor([0, 0, 1, 1, 1])
    # thresholds: class 0 mean p0 over labels 0 = 0.8; class 1 mean p1 over labels 1 = (0.8 + 0.4 + 0.5) / 3.
    # sample 1 reaches neither (0.7 < 0.8, 0.3 < 0.567); sample 3 reaches neither; sample 4 neither.
    assert confident_off_diagonal(probs, labels).tolist() == [False, False, False, False, False]
    probs[3] = torch.tensor([0.85, 0.15])  # now above class 0's threshold with label 1: off the diagonal
    assert confident_off_diagonal(probs, labels).tolist() == [False, False, False, True, False]


def test_rank_correlation():
    a = torch.tensor([0.1, 0.5, 0.2, 0.9])
    assert rank_correlation(a, a * 3 + 1) == pytest.approx(1.0)
    assert rank_correlation(a, -a) == pytest.approx(-1.0)


# ------------------------------------------------------------------------------------- the selectors


def _rows(loss: torch.Tensor, probs: torch.Tensor, labels: torch.Tensor, view_other=None, margin=None):
    """Hand-made rows for StatsSelector.commit: ROW_FIELDS, probabilities, label."""
    n = loss.shape[0]
    fields = torch.stack(
        [
            loss,
            torch.zeros(n) if margin is None else margin,
            torch.zeros(n),
            torch.zeros(n) if view_other is None else view_other,
        ],
        1,
    )
    return torch.cat([fields, probs, labels[:, None].float()], 1)


def test_make_selector_builds_the_rdfer_method_and_refuses_any_other():
    robust = load_config(None).robust
    assert (robust.enabled, robust.method) == (True, "rdfer")  # the default, by the noise experiment
    assert type(make_selector(robust, 4, 10, "cpu")) is SelectionSelector
    for retired in ("small_loss", "agreement", "elr", "oracle"):
        with pytest.raises(ConfigError, match="robust.method"):
            load_config(None, [f"robust.method={retired}"])
    with pytest.raises(ConfigError, match="`rdfer` method only"):
        make_selector(dataclasses.replace(robust, method="agreement"), 4, 10, "cpu")


def test_oracle_weights_the_truth_from_the_first_step():
    robust = load_config(None, ["robust.enabled=true", "robust.noisy_weight=0"]).robust
    sel = OracleSelector(robust, 4, 3, noisy=torch.tensor([False, True, False, False]))
    out = {"logits": torch.zeros(4, 3), "detail_instance_logits": torch.zeros(4, 2, 3)}
    a = sel.assess(out, torch.tensor([0, 1, 2, 0]), torch.arange(4))
    assert a.weight.tolist() == pytest.approx([4 / 3, 0, 4 / 3, 4 / 3])  # renormalised to sum 4
    sel.commit(torch.arange(4), a.rows, torch.tensor(True))
    sel.end_epoch(0)
    assert sel.category.tolist() == [EASY, NOISY, EASY, EASY]
    assert sel.scores().tolist() == pytest.approx([float(torch.log(torch.tensor(3.0)))] * 4)


def test_rdfer_splits_by_the_mean_loss_after_its_warm_up():
    robust = load_config(None, ["robust.warmup=0.5", "robust.noisy_weight=0", "robust.exclude=true"]).robust
    n = 40
    sel = SelectionSelector(robust, n, epochs=4)
    loss = torch.cat([torch.linspace(0.1, 0.5, 30), torch.linspace(3.0, 3.5, 10)])  # the last 10: high loss
    probs, labels = torch.full((n, 2), 0.5), torch.zeros(n, dtype=torch.long)
    for epoch in range(3):
        a = sel.assess(_elr_out(torch.zeros(n, 2)), labels, torch.arange(n))
        rows = torch.cat([a.rows[:, :2], _rows(loss, probs, labels)], 1)  # the ELR targets come first
        sel.commit(torch.arange(n), rows, torch.tensor(True))
        sel.end_epoch(epoch)
        assert sel.warm == (epoch >= 1)  # warm-up: round(0.5 * 4) = 2 epochs
    assert (sel.category == NOISY).tolist() == [i >= 30 for i in range(n)]
    assert sel.weight[30:].eq(0).all() and sel.weight[:30].eq(1).all()
    assert torch.allclose(sel.scores(), loss)
    w = sel.assess(_elr_out(torch.zeros(n, 2)), labels, torch.arange(n)).weight
    assert w[30:].eq(0).all() and w[:30].tolist() == pytest.approx([40 / 30] * 30)  # sum kept at the batch's


def test_by_default_the_split_lists_the_suspects_and_every_weight_stays_1():
    n = 40
    sel = SelectionSelector(load_config(None, ["robust.warmup=0.25"]).robust, n, 4)
    loss = torch.cat([torch.linspace(0.1, 0.5, 30), torch.linspace(3.0, 3.5, 10)])
    probs, labels = torch.full((n, 2), 0.5), torch.zeros(n, dtype=torch.long)
    for epoch in range(2):
        a = sel.assess(_elr_out(torch.zeros(n, 2)), labels, torch.arange(n))
        assert a.weight.eq(1).all() and a.elr_lambda == 3.0  # the ELR term acts; no sample is left out
        sel.commit(
            torch.arange(n), torch.cat([a.rows[:, :2], _rows(loss, probs, labels)], 1), torch.tensor(True)
        )
        sel.end_epoch(epoch)
    assert (sel.category == NOISY).tolist() == [i >= 30 for i in range(n)]  # listed
    assert sel.assess(_elr_out(torch.zeros(n, 2)), labels, torch.arange(n)).weight.eq(1).all()


def test_the_split_is_judged_but_not_acted_on_when_robust_is_disabled():
    n = 40
    on, off = (
        SelectionSelector(
            load_config(None, [f"robust.enabled={e}", "robust.warmup=0.25", "robust.exclude=true"]).robust,
            n,
            4,
        )
        for e in ("true", "false")
    )
    loss = torch.cat([torch.linspace(0.1, 0.5, 30), torch.linspace(3.0, 3.5, 10)])
    probs, labels = torch.full((n, 2), 0.5), torch.zeros(n, dtype=torch.long)
    for sel in (on, off):
        a = sel.assess(_elr_out(torch.zeros(n, 2)), labels, torch.arange(n))
        sel.commit(
            torch.arange(n), torch.cat([a.rows[:, :2], _rows(loss, probs, labels)], 1), torch.tensor(True)
        )
        sel.end_epoch(0)
    assert torch.equal(on.category, off.category) and (off.category == NOISY).sum() == 10
    assert on.warm and not off.warm
    b = off.assess(_elr_out(torch.zeros(n, 2)), labels, torch.arange(n))
    assert b.weight.eq(1).all() and b.elr_target is None  # plain cross-entropy


def test_elr_term_in_the_loss_by_hand():
    out = {
        "detail_video_logits": torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]]),
        "synopsis_video_logits": torch.tensor([[0.0, 1.0], [2.0, 0.0]]),
        "synopsis_instance_logits": torch.zeros(2, 3, 2),
        "detail_instance_logits": torch.zeros(2, 3, 2),
    }
    out["logits"] = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]], requires_grad=True)  # p: .75/.25, .5/.5
    y, w, cfg = torch.tensor([0, 1]), torch.ones(2), OptimConfig()
    t = torch.tensor([[0.6, 0.4], [1.0, 0.0]])
    plain, _ = rdfer_loss(out, y, w, cfg, num_frames=4)
    total, parts = rdfer_loss(out, y, w, cfg, num_frames=4, elr_target=t, elr_lambda=3.0)
    term = (math.log(1 - (0.75 * 0.6 + 0.25 * 0.4)) + math.log(1 - 0.5)) / 2
    assert float(parts["elr"]) == pytest.approx(term, rel=1e-6)
    assert float(total.detach() - plain) == pytest.approx(3.0 * term, rel=1e-6)
    # Only the ELR term reaches out["logits"]: d/dz_k log(1 - <p, t>) = -p_k (t_k - <p, t>) / (1 - <p, t>).
    total.backward()
    grad = [
        [-p * (tk - 0.55) / 0.45 for p, tk in ((0.75, 0.6), (0.25, 0.4))],
        [-0.5 * (1 - 0.5) / 0.5, 0.5 * 0.5 / 0.5],
    ]
    torch.testing.assert_close(out["logits"].grad, 3.0 / 2 * torch.tensor(grad), rtol=1e-5, atol=1e-6)
    far, _ = rdfer_loss(
        {**out, "logits": torch.tensor([[100.0, 0.0], [0.0, 0.0]])},
        y,
        w,
        cfg,
        4,
        elr_target=t,
        elr_lambda=3.0,
    )
    assert math.isfinite(float(far))  # p clamped to 1 - 1e-4: log(1 - <p, t>) stays finite


def _elr_out(logits):
    return {"logits": logits, "detail_instance_logits": logits[:, None].expand(-1, 2, -1)}


def _elr_selector(n=4, epochs=3, beta=0.7):
    robust = load_config(None, ["robust.enabled=true", f"robust.elr_beta={beta}"]).robust
    return SelectionSelector(robust, n, epochs)


def test_elr_targets_are_an_ema_of_the_clamped_probabilities_stored_only_where_ok():
    sel = _elr_selector()
    ids, labels = torch.tensor([1, 3]), torch.tensor([0, 2])
    z1, z2 = (
        torch.tensor([[20.0, 0.0, 0.0], [0.0, 1.0, 2.0]]),
        torch.tensor([[0.0, 0.0, 0.0], [2.0, 1.0, 0.0]]),
    )
    q1, q2 = z1.softmax(1).clamp(1e-4, 1 - 1e-4), z2.softmax(1).clamp(1e-4, 1 - 1e-4)
    q1, q2 = q1 / q1.sum(1, keepdim=True), q2 / q2.sum(1, keepdim=True)
    assert q1[0].tolist() == pytest.approx([(1 - 1e-4) / (1 + 1e-4), 1e-4 / (1 + 1e-4), 1e-4 / (1 + 1e-4)])
    a = sel.assess(_elr_out(z1), labels, ids)
    torch.testing.assert_close(a.elr_target, 0.3 * q1)  # the stored target starts at 0
    assert a.elr_lambda == 3.0 and a.weight.eq(1).all() and sel.elr.targets is None  # assess stores nothing
    sel.commit(ids, a.rows, torch.tensor(True))
    torch.testing.assert_close(sel.elr.targets[ids], 0.3 * q1)
    assert sel.elr.targets[[0, 2]].eq(0).all()
    b = sel.assess(_elr_out(z2), labels, ids)
    torch.testing.assert_close(b.elr_target, 0.7 * 0.3 * q1 + 0.3 * q2)
    counts = sel.stats.current[1].clone()
    sel.commit(ids, b.rows, torch.tensor(False))  # a non-finite step leaves no trace
    torch.testing.assert_close(sel.elr.targets[ids], 0.3 * q1)
    assert torch.equal(sel.stats.current[1], counts)
    sel.commit(ids, b.rows, torch.tensor(True))
    torch.testing.assert_close(sel.elr.targets[ids], 0.7 * 0.3 * q1 + 0.3 * q2)


def test_elr_state_dict_round_trip():
    sel = _elr_selector()
    ids, labels = torch.tensor([0, 2, 3]), torch.tensor([1, 0, 1])
    logits = torch.tensor([[1.0, 0.0], [0.0, 3.0], [0.5, 0.5]])
    for epoch in range(2):
        a = sel.assess(_elr_out(logits * (epoch + 1)), labels, ids)
        sel.commit(ids, a.rows, torch.tensor(True))
        sel.end_epoch(epoch)
    back = _elr_selector()
    back.load_state_dict(sel.state_dict())
    assert torch.equal(back.elr.targets, sel.elr.targets) and back.elr.num_classes == 2
    a, b = sel.assess(_elr_out(logits), labels, ids), back.assess(_elr_out(logits), labels, ids)
    assert torch.equal(a.elr_target, b.elr_target) and torch.equal(a.rows, b.rows)
    with pytest.raises(ValueError, match="ELR targets hold 4 samples"):
        _elr_selector(n=5).load_state_dict(sel.state_dict())


def test_elr_term_is_left_out_when_robust_is_disabled():
    robust = load_config(None, ["robust.enabled=false"]).robust
    sel = SelectionSelector(robust, 4, 3)
    ids, logits = torch.tensor([0, 1]), torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    a = sel.assess(_elr_out(logits), torch.tensor([0, 1]), ids)
    assert a.elr_target is None and a.elr_lambda == 0.0
    sel.commit(ids, a.rows, torch.tensor(True))  # the targets are still kept
    q = logits.softmax(1)
    torch.testing.assert_close(sel.elr.targets[ids], 0.3 * q / q.sum(1, keepdim=True))


@pytest.mark.parametrize("bad", ["robust.elr_beta=1.0", "robust.elr_beta=-0.1", "robust.elr_lambda=-1"])
def test_elr_config_is_validated(bad):
    with pytest.raises(ConfigError, match=bad.split("=")[0]):
        load_config(None, [bad])


def test_a_selector_that_has_seen_no_epoch_saves_and_loads():
    # A checkpoint can be asked for before the first epoch ends (e.g. a run interrupted in its first epoch).
    robust = load_config(None).robust
    state = make_selector(robust, 5, 3, "cpu").state_dict()
    assert state["stats"]["counts"].shape == (0, 5)
    again = make_selector(robust, 5, 3, "cpu")
    again.load_state_dict(state)
    assert torch.equal(again.scores(), make_selector(robust, 5, 3, "cpu").scores())


# ------------------------------------------------------------------- the experiment's co-teaching baseline


def test_small_loss_mask_drops_the_highest_losses():
    loss = torch.tensor([0.3, 2.0, 0.1, 1.5, 0.2])
    assert small_loss_mask(loss, 2).tolist() == [1.0, 0.0, 1.0, 0.0, 1.0]
    assert small_loss_mask(loss, 0).tolist() == [1.0] * 5


def test_coteaching_trains_each_stream_on_the_other_streams_picks():
    robust = load_config(None, ["robust.warmup=0.5"]).robust
    sel = CoTeachingSelector(robust, 4, epochs=2)
    sel.rate = 0.25  # one of each batch of 4 left out
    synopsis = torch.tensor([[5.0, 0.0], [5.0, 0.0], [0.0, 5.0], [5.0, 0.0]])  # sample 2 contradicts label 0
    detail = torch.tensor([[5.0, 0.0], [0.0, 5.0], [5.0, 0.0], [5.0, 0.0]])  # sample 1 does
    out = {
        "logits": detail,
        "detail_video_logits": detail,
        "synopsis_video_logits": synopsis,
        "detail_instance_logits": detail[:, None].expand(-1, 2, -1),
    }
    a = sel.assess(out, torch.zeros(4, dtype=torch.long), torch.arange(4))
    assert a.weight.tolist() == pytest.approx([4 / 3, 4 / 3, 0.0, 4 / 3])  # the synopsis stream's picks
    assert a.stream_weight.tolist() == pytest.approx([4 / 3, 0.0, 4 / 3, 4 / 3])  # the detail stream's
    alone = CoTeachingSelector(robust, 4, epochs=2, cross=False)
    alone.rate = 0.25
    b = alone.assess(out, torch.zeros(4, dtype=torch.long), torch.arange(4))
    assert b.stream_weight is None and b.weight.tolist() == pytest.approx([4 / 3, 0.0, 4 / 3, 4 / 3])


def test_stream_weight_weights_the_synopsis_streams_heads():
    torch.manual_seed(0)
    out = {
        "detail_video_logits": torch.randn(3, 4),
        "synopsis_video_logits": torch.randn(3, 4),
        "synopsis_instance_logits": torch.randn(3, 2, 4),
        "detail_instance_logits": torch.randn(3, 2, 4),
    }
    y, cfg = torch.tensor([0, 1, 2]), OptimConfig()
    w, sw = torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.5, 1.5, 1.0])
    _, parts = rdfer_loss(out, y, w, cfg, 4, stream_weight=sw)
    ls = cfg.label_smoothing
    assert float(parts["detail"]) == pytest.approx(float(weighted_ce(out["detail_video_logits"], y, w, ls)))
    assert float(parts["synopsis"]) == pytest.approx(
        float(weighted_ce(out["synopsis_video_logits"], y, sw, ls))
    )
    instance = 0.5 * (
        weighted_ce(out["synopsis_instance_logits"], y, sw, ls)
        + weighted_ce(out["detail_instance_logits"], y, w, ls)
    )
    assert float(parts["instance"]) == pytest.approx(float(instance))
