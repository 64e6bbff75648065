import math

import pytest
import torch
import torch.nn.functional as F

from rdfer.config import OptimConfig, load_config
from rdfer.ops.agreement import EASY, HARD, NOISY
from rdfer.robust.loss import rdfer_loss, weighted_ce
from rdfer.robust.memory import AgreementSelector


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
    expected = torch.stack([F.cross_entropy(inst[i], target[i].expand(4), label_smoothing=0.1) for i in range(3)])
    assert float(weighted_ce(inst, target, weight, 0.1)) == pytest.approx(float((weight * expected).mean()), rel=1e-6)
    plain = F.cross_entropy(inst[:, 0], target)
    assert float(weighted_ce(inst[:, 0], target, torch.ones(3), 0.0)) == pytest.approx(float(plain), rel=1e-6)


def test_total_loss_is_the_specs_weighted_sum():
    torch.manual_seed(1)
    out = {"detail_video_logits": torch.randn(2, 7), "synopsis_video_logits": torch.randn(2, 7),
           "synopsis_instance_logits": torch.randn(2, 16, 7), "detail_instance_logits": torch.randn(2, 4, 7),
           "key_positions": torch.tensor([[1.5, 9.5, 30.5, 60.0]] * 2),
           "predicted_positions": torch.tensor([[0.0, 9.5, 33.5, 63.0]] * 2)}
    y, w, cfg = torch.tensor([3, 5]), torch.tensor([1.0, 1.5]), OptimConfig()
    total, parts = rdfer_loss(out, y, w, cfg, num_frames=64)
    ce = lambda k: weighted_ce(out[k], y, w, 0.1)  # noqa: E731
    l1 = (1.5 + 0 + 3 + 3) / 4 / 63
    expected = ce("detail_video_logits") + 0.1 * ce("synopsis_video_logits") + 0.1 * 0.5 * (
        ce("synopsis_instance_logits") + ce("detail_instance_logits")) + 0.1 * l1
    assert float(total) == pytest.approx(float(expected), rel=1e-6)
    assert float(parts["position"]) == pytest.approx(l1, rel=1e-6)


def test_agreement_selector_assesses_purely_commits_where_ok_and_lists_noisy(tmp_path):
    robust = load_config(None, ["robust.warmup=0"]).robust
    sel = AgreementSelector(robust, 4, epochs=10)
    assert sel.warm  # no warm-up: the weights apply from the first step
    # sample 0: all clips say class 1, label 1 -> easy; sample 1: all say 2, label 0 with no support -> noisy;
    # sample 2: clips split 2-2 -> hard.
    logits = torch.full((3, 4, 3), -20.0)
    logits[0, :, 1] = 20
    logits[1, :, 2] = 20
    logits[2, :2, 0] = 20
    logits[2, 2:, 1] = 20
    out, labels, ids = {"detail_instance_logits": logits}, torch.tensor([1, 0, 0]), torch.tensor([0, 1, 2])
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

    restored = AgreementSelector(robust, 4, epochs=10)
    restored.load_state_dict(sel.state_dict())
    assert torch.equal(restored.category, sel.category) and restored.warm
    with pytest.raises(ValueError, match="holds 4 samples"):
        AgreementSelector(robust, 5, epochs=10).load_state_dict(sel.state_dict())


def test_agreement_selector_warms_up_after_its_share_of_the_epochs():
    sel = AgreementSelector(load_config(None, ["robust.warmup=0.3"]).robust, 4, epochs=10)
    warm = []
    for epoch in range(5):
        warm.append(sel.warm)
        assert sel.end_epoch(epoch).fields == {"warm": warm[-1]}
    assert warm == [False, False, False, True, True]
