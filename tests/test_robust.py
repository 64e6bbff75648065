import math

import pytest
import torch
import torch.nn.functional as F

from rdfer.config import OptimConfig
from rdfer.ops.agreement import EASY, HARD, NOISY, AgreementParams
from rdfer.robust.loss import rdfer_loss, weighted_ce
from rdfer.robust.memory import AgreementMemory


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


def test_memory_observe_shares_state_and_noisy_list(tmp_path):
    mem = AgreementMemory(4)
    # sample 0: all clips say class 1, label 1 -> easy; sample 1: all say 2, label 0 with no support -> noisy;
    # sample 2: clips split 2-2 -> hard.
    logits = torch.full((3, 4, 3), -20.0)
    logits[0, :, 1] = 20
    logits[1, :, 2] = 20
    logits[2, :2, 0] = 20
    logits[2, 2:, 1] = 20
    stats = mem.observe(logits, torch.tensor([1, 0, 0]), torch.tensor([0, 1, 2]), AgreementParams(), warm=True)
    assert stats.category.tolist() == [EASY, NOISY, HARD]
    assert stats.weight.tolist() == pytest.approx([1.0, 0.1, 1.5])
    assert mem.shares() == pytest.approx({"easy": 1 / 3, "hard": 1 / 3, "noisy": 1 / 3})
    assert torch.isnan(mem.ema[3]).all()  # never seen

    path = tmp_path / "noisy.csv"
    assert mem.write_noisy(path, ["a", "b", "c", "d"], [1, 0, 0, 2], ("x", "y", "z")) == 1
    lines = path.read_text().splitlines()
    assert lines[0] == "sample_id,key,given_label,majority_class,A,S"
    assert lines[1].startswith("1,b,x,z,1.0000,")

    restored = AgreementMemory(4)
    restored.load_state_dict(mem.state_dict())
    assert torch.equal(restored.category, mem.category)
    with pytest.raises(ValueError, match="holds 4 samples"):
        AgreementMemory(5).load_state_dict(mem.state_dict())
    with pytest.raises(IndexError, match="sized to the train split"):
        mem.observe(logits, torch.tensor([1, 0, 0]), torch.tensor([0, 1, 4]), AgreementParams(), warm=True)
