import pytest

from rdfer.config import PACKAGED, Config, ConfigError, diff, from_dict, load_config


def test_defaults_are_the_papers():
    c = load_config()
    assert (c.data.num_frames, c.data.image_size, c.data.batch_size) == (64, 112, 128)
    assert (c.model.encoder, c.model.synopsis_frames, c.model.clips, c.model.clip_length) == (
        "resnet18",
        16,
        4,
        4,
    )
    assert (c.optim.lr, c.optim.weight_decay, c.optim.epochs, c.optim.min_lr) == (5e-4, 0.05, 100, 5e-6)
    # Package's choices, by the noise experiment: the rdfer method on (ELR on every sample, suspects listed).
    assert (c.robust.enabled, c.robust.method, c.robust.exclude) == (True, "rdfer", False)
    assert (c.robust.elr_lambda, c.robust.elr_beta, c.robust.warmup) == (3.0, 0.7, 0.2)
    assert c.run.seed == 42 and c.optim.label_smoothing == 0.1


@pytest.mark.parametrize("name", sorted(p.stem for p in PACKAGED.glob("*.yaml")))
def test_packaged_configs_load(name):
    assert isinstance(load_config(name), Config)


def test_yaml_file_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 1e-3\nmodel:\n  encoder: small\n")
    c = load_config(path, ["optim.epochs=3", "data.workers=null", "robust.enabled=false"])
    assert (c.optim.lr, c.model.encoder, c.optim.epochs, c.data.workers, c.robust.enabled) == (
        1e-3,
        "small",
        3,
        None,
        False,
    )


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lrr=1", "unknown key optim.lrr"),
        ("optimizer.lr=1", "unknown section 'optimizer'"),
        ("optim.lr=fast", "optim.lr: expected float"),
        ("optim.epochs=2.5", "optim.epochs: expected int"),
        ("robust.enabled=maybe", "robust.enabled: expected bool"),
        ("model.encoder=vgg", "model.encoder must be one of"),
        ("data.num_frames=30", "multiple of model.synopsis_frames"),
        ("model.heads=7", "must divide by model.heads"),
        ("optim.lr", "must look like section.key=value"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(None, [override])


def test_unknown_key_in_a_file_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  encodr: small\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown key model\.encodr"):
        load_config(path)


def test_missing_config_file_and_unknown_packaged_name():
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("nowhere.yaml")
    with pytest.raises(ConfigError, match="no packaged config named 'nosuch'"):
        load_config("nosuch")


def test_round_trip_and_diff():
    a = load_config("quick")
    b = from_dict(a.to_dict())
    assert diff(a, b) == []
    c = load_config("quick", ["optim.lr=0.1", "run.out=elsewhere"])
    assert diff(a, c) == [f"optim.lr: {a.optim.lr!r} != 0.1"]  # run.* may change between runs
