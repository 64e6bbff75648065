import pytest
import torch

from rdfer.config import load_config
from rdfer.errors import CheckpointError, ConfigError
from rdfer.models import RDFER
from rdfer.models.encoder import FrameEncoder, load_pretrained, temporal_shift
from rdfer.models.sequence import AttentionGate, SequenceHead


def small_config(**extra):
    base = [
        "model.encoder=small",
        "model.feature_dim=16",
        "model.lstm_hidden=8",
        "model.heads=2",
        "data.num_frames=16",
        "model.synopsis_frames=8",
        "model.clip_length=2",
        "model.clips=4",
    ]
    return load_config(None, base + [f"{k}={v}" for k, v in extra.items()])


CLASSES = ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")


def frames(b=3, t=16, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, t, 3, size, size), dtype=torch.uint8, generator=g)


def test_output_shapes_and_index_ranges():
    cfg = small_config()
    model = RDFER(cfg, CLASSES)
    out = model(frames())
    assert out["logits"].shape == (3, 7)
    assert out["synopsis_instance_logits"].shape == (3, 8, 7)
    assert out["detail_instance_logits"].shape == (3, 4, 7)
    assert out["clip_indices"].shape == (3, 4, 2)
    assert out["clip_indices"].min() >= 0 and out["clip_indices"].max() <= 15
    assert out["synopsis_indices"].shape == (3, 8)
    # Key positions come in time order for the detail BiLSTM.
    assert torch.all(out["key_positions"][:, 1:] >= out["key_positions"][:, :-1])


def test_gradients_reach_both_streams_and_every_trained_parameter():
    torch.manual_seed(0)
    model = RDFER(small_config(), CLASSES)
    out = model(frames())
    loss = out["logits"].sum() + out["synopsis_video_logits"].sum() + out["synopsis_instance_logits"].sum()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []
    assert model.detail_encoder.backbone.blocks[0]["conv"].weight.grad.abs().sum() > 0
    assert model.synopsis_encoder.backbone.blocks[0]["conv"].weight.grad.abs().sum() > 0


def test_learned_positions_head_trains_through_the_l1_term():
    model = RDFER(small_config(**{"model.learned_positions": "true"}), CLASSES)
    out = model(frames())
    assert out["predicted_positions"].shape == (3, 4)
    out["predicted_positions"].sum().backward()
    assert model.position_head.weight.grad.abs().sum() > 0


def test_eval_is_deterministic_and_train_samples_randomly():
    model = RDFER(small_config(), CLASSES).eval()
    x = frames()
    a, b = model(x), model(x)
    assert torch.equal(a["logits"], b["logits"])
    assert torch.equal(a["synopsis_indices"][0], torch.arange(8) * 2 + 1)  # segment centres
    model.train()
    torch.manual_seed(1)
    c = model(x)["synopsis_indices"]
    torch.manual_seed(2)
    assert not torch.equal(c, model(x)["synopsis_indices"])


def test_augmenting_inside_the_gather_equals_augmenting_the_clip_first():
    from rdfer.data.augment import clip_augment_params
    from rdfer.ops.augment import apply_augment, params_to_tensor

    model = RDFER(small_config(), CLASSES).eval()
    x = frames(b=2)
    params = [clip_augment_params(0, 3, i, 32, scale=(0.3, 1.0), jitter=0.4) for i in range(2)]
    inside = model(x, augment=params_to_tensor(params))
    first = model(torch.stack([apply_augment(x[i], p) for i, p in enumerate(params)]))
    torch.testing.assert_close(inside["logits"], first["logits"], rtol=1e-4, atol=1e-4)
    identity = params_to_tensor([clip_augment_params(0, 0, 0, 32, scale=(1.0, 1.0), jitter=0.0)] * 2)
    plain = model(x)["logits"]
    assert not torch.allclose(inside["logits"], plain)
    flipless = identity.clone()
    flipless[:, 4] = 0
    torch.testing.assert_close(model(x, augment=flipless)["logits"], plain, rtol=0, atol=0)


def test_average_output_option():
    cfg = small_config(**{"model.output": "average"})
    out = RDFER(cfg, CLASSES).eval()(frames())
    torch.testing.assert_close(
        out["logits"], 0.5 * (out["detail_video_logits"] + out["synopsis_video_logits"])
    )


def test_fewer_classes_than_clips_uses_one_clip_per_class():
    model = RDFER(small_config(), ("negative", "neutral", "positive"))
    out = model(frames())
    assert model.clips == 3 and out["detail_instance_logits"].shape == (3, 3, 3)
    assert out["clip_indices"].shape == (3, 3, 2) and out["logits"].shape == (3, 3)


def test_the_model_is_built_from_a_config_and_class_names():
    with pytest.raises(TypeError, match="rdfer.Config"):
        RDFER(small_config().model, CLASSES)
    with pytest.raises(ValueError, match="at least 2 class names"):
        RDFER(small_config(), ("only",))


def test_bad_input_shape_is_an_error():
    with pytest.raises(ValueError, match=r"\[B, T, 3, H, W\]"):
        RDFER(small_config(), CLASSES)(torch.zeros(2, 16, 32, 32, 3, dtype=torch.uint8))


def test_temporal_shift_by_hand():
    # 2 groups of 4 frames, 8 channels: channel 0 moves one frame back, channel 1 one frame forward.
    x = torch.arange(8 * 8, dtype=torch.float32).view(8, 8, 1, 1)
    y = temporal_shift(x, group=4).view(2, 4, 8)
    g = x.view(2, 4, 8)
    assert torch.equal(y[:, :3, 0], g[:, 1:, 0]) and torch.all(y[:, 3, 0] == 0)
    assert torch.equal(y[:, 1:, 1], g[:, :3, 1]) and torch.all(y[:, 0, 1] == 0)
    assert torch.equal(y[:, :, 2:], g[:, :, 2:])


def test_attention_gate_module_matches_a_hand_written_mhsa():
    torch.manual_seed(0)
    gate = AttentionGate(8, 2)
    x = torch.randn(2, 5, 8)
    q, k, v = gate.qkv(x).chunk(3, dim=-1)
    heads = (
        torch.nn.functional.scaled_dot_product_attention(
            *(t.view(2, 5, 2, 4).transpose(1, 2) for t in (q, k, v))
        )
        .transpose(1, 2)
        .reshape(2, 5, 8)
    )
    expected = x * torch.sigmoid(gate.norm(heads))
    torch.testing.assert_close(gate(x), expected)


def test_sequence_head_shapes_and_channel_attention():
    head = SequenceHead(16, 8, 1, 2, instances=4, classes=5)
    feats = torch.randn(3, 4, 16)
    inst, video, bag = head(feats)
    assert (inst.shape, video.shape, bag.shape) == ((3, 4, 5), (3, 5), (3, 16))
    zero_inst, _, _ = head(feats, channel_attention=torch.zeros(3, 16))
    # A closed channel gate zeroes the gated features: every instance gets the classifier bias.
    torch.testing.assert_close(zero_inst, head.classifier.bias.expand(3, 4, 5))


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_resnet_state_dict_has_torchvision_layout(name):
    keys = set(FrameEncoder(name, 512, tsm=True).backbone.state_dict())
    expected = {
        "conv1.weight",
        "bn1.running_mean",
        "layer1.0.conv1.weight",
        "layer4.1.bn2.weight",
        "layer2.0.downsample.0.weight",
        "layer2.0.downsample.1.running_var",
    }
    assert expected <= keys
    assert len(keys) == (120 if name == "resnet18" else 318)  # torchvision's count without fc.weight/fc.bias


def test_load_pretrained_strict_with_a_clear_report(tmp_path):
    source = FrameEncoder("resnet18", 512, tsm=False)
    state = {f"module.{k}": v for k, v in source.backbone.state_dict().items()}
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)
    good = tmp_path / "r18.pth"
    torch.save({"state_dict": state}, good)
    target = FrameEncoder("resnet18", 512, tsm=False)
    assert load_pretrained(target, good) == ["fc.bias", "fc.weight"]
    torch.testing.assert_close(target.backbone.conv1.weight, source.backbone.conv1.weight)

    broken = {k.removeprefix("module."): v for k, v in state.items() if "layer4.1" not in k}
    broken["layer9.weight"] = torch.zeros(1)
    broken["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    bad = tmp_path / "bad.pth"
    torch.save(broken, bad)
    with pytest.raises(ValueError) as info:
        load_pretrained(FrameEncoder("resnet18", 512, tsm=False), bad)
    text = str(info.value)
    assert "bad.pth" in text and "missing (" in text and "layer4.1.conv1.weight" in text
    assert (
        "unexpected (1): layer9.weight" in text
        and "conv1.weight: file (64, 3, 3, 3) vs model (64, 3, 7, 7)" in text
    )
    with pytest.raises(ConfigError, match="never downloads"):
        load_pretrained(target, tmp_path / "absent.pth")


def test_the_fields_ms_celeb_resnet18_loads_as_it_is_distributed(tmp_path):
    # ijba_res18_naive.pth.tar's layout: {'state_dict': ...}, a DataParallel 'module.' prefix, and a 'feature'
    # embedding before the 'fc' identity classifier (made here with the same keys: no download).
    source = FrameEncoder("resnet18", 512, tsm=False)
    state = {f"module.{k}": v for k, v in source.backbone.state_dict().items()}
    state |= {
        "module.feature.weight": torch.randn(256, 512),
        "module.feature.bias": torch.randn(256),
        "module.fc.weight": torch.randn(8631, 256),
        "module.fc.bias": torch.randn(8631),
    }
    path = tmp_path / "ijba_res18_naive.pth.tar"
    torch.save({"state_dict": state, "epoch": 30, "arch": "resnet18"}, path)
    target = FrameEncoder("resnet18", 512, tsm=False)
    assert load_pretrained(target, path) == ["fc.bias", "fc.weight", "feature.bias", "feature.weight"]
    for name, value in source.backbone.state_dict().items():
        assert torch.equal(target.backbone.state_dict()[name], value), name


def test_pretrained_file_that_would_run_code_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"conv1.weight": Payload()}}, path)
    with pytest.raises(CheckpointError, match="evil.pth: not loadable as tensors"):
        load_pretrained(FrameEncoder("small", 16, tsm=False), path)
