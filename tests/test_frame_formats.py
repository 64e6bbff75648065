"""Every frame image format a dataset may hold is read as a viewer shows it, or refused naming the file: by
the reader, by `summary --verify` (every byte decoded) and by the quick check before training (header and last
bytes; a file that does not look whole is decoded)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_mistakes import one_line_error, train_args

from rdfer.data.frames import check_image, read_frame_files
from rdfer.errors import DataError
from rdfer.train import main as train_main

RESOURCES = Path(__file__).resolve().parent / "resources"
SIZE = 32


def reference() -> np.ndarray:
    """An asymmetric RGB picture: a turned or clipped copy differs from it everywhere."""
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    return np.stack([x * 7, y * 5 + 20, (x * y) % 200 + 30], -1).astype(np.uint8)


def _sixteen_bit(path: Path) -> np.ndarray:
    grey = reference()[..., 1]
    Image.fromarray(grey.astype(np.uint16) * 257).save(path)  # PNG mode I;16: PIL's convert() gives white
    assert Image.open(path).mode in ("I;16", "I")
    return np.repeat(grey[..., None], 3, -1)


def _grey(path: Path) -> np.ndarray:
    Image.fromarray(reference()[..., 0]).save(path)
    return np.repeat(reference()[..., :1], 3, -1)


def _palette(path: Path) -> np.ndarray:
    img = Image.fromarray(reference()).convert("P")
    img.save(path)
    return np.asarray(img.convert("RGB"))


def _opaque_rgba(path: Path) -> np.ndarray:
    Image.fromarray(reference()).convert("RGBA").save(path)
    return reference()


def _cmyk_jpeg(path: Path) -> np.ndarray:
    Image.fromarray(reference()).convert("CMYK").save(path, quality=95)
    return reference()


def _exif_rotated_jpeg(path: Path) -> np.ndarray:
    """Stored turned a quarter left, with EXIF orientation 6 (turn it right to view), as phones write it."""
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(reference()).transpose(Image.Transpose.ROTATE_90).save(
        path, quality=95, subsampling=0, exif=exif
    )
    return reference()


@pytest.mark.parametrize(
    ("make", "suffix", "tolerance"),
    [
        (_sixteen_bit, ".png", 0),
        (_grey, ".png", 0),
        (_palette, ".png", 0),
        (_opaque_rgba, ".png", 0),
        (_cmyk_jpeg, ".jpg", 3),  # JPEG's loss; a wrong turn or colour is off by tens
        (_exif_rotated_jpeg, ".jpg", 3),
    ],
)
def test_a_frame_format_reads_as_a_viewer_shows_it(tmp_path, make, suffix, tolerance):
    path = tmp_path / f"0{suffix}"
    expected = make(path)
    got = read_frame_files([path], np.array([0]), SIZE)[0]
    error = np.abs(got.astype(int) - expected.astype(int)).mean()
    assert error <= tolerance, error
    assert check_image(path) is None and check_image(path, whole=False) is None


def _transparent(path: Path) -> str:
    rgba = Image.fromarray(reference()).convert("RGBA")
    rgba.putpixel((3, 3), (0, 0, 0, 0))
    rgba.save(path)
    return "transparent"


def _transparent_palette(path: Path) -> str:
    img = Image.fromarray(reference()).convert("P")
    img.save(path, transparency=int(np.asarray(img)[3, 3]))
    return "transparent"


def _text(path: Path) -> str:
    path.write_text("not an image\n")
    return "cannot decode"


def _truncated(path: Path) -> str:
    shutil.copy(RESOURCES / "truncated.jpg", path)
    return "truncated"


def _float(path: Path) -> str:
    Image.fromarray(reference()[..., 0].astype(np.float32)).save(path.with_suffix(".tif"))
    path.write_bytes(path.with_suffix(".tif").read_bytes())  # a float TIFF named .png
    return "mode F"


@pytest.mark.parametrize("make", [_transparent, _transparent_palette, _text, _truncated, _float])
def test_a_frame_that_cannot_be_read_right_is_refused_naming_it(tmp_path, make):
    path = tmp_path / f"0{'.jpg' if make in (_text, _truncated) else '.png'}"
    problem = make(path)
    with pytest.raises(DataError, match=problem) as caught:
        read_frame_files([path], np.array([0]), SIZE)
    assert str(path) in str(caught.value)
    for whole in (True, False):
        found = check_image(path, whole)
        assert found is not None and found.startswith(str(path)) and problem in found, found


@pytest.mark.parametrize("make", [_text, _transparent])
def test_a_bad_frame_anywhere_stops_training_before_the_first_step(tiny_root, tmp_path, capsys, make):
    """Even a clip the first epoch would not draw (the last one of the split) is named before training."""
    root = tmp_path / "root"
    shutil.copytree(tiny_root, root)
    clip = sorted((root / "Clip" / "clip_224x224").iterdir())[-1]
    frame = sorted(clip.iterdir())[-1]
    frame.unlink()
    bad = frame.with_suffix(".jpg" if make is _text else ".png")
    make(bad)
    out = tmp_path / "o"
    line = one_line_error(capsys, train_main(train_args(root, out)), 1, str(bad), "summary --verify")
    assert "skip_bad" in line
    assert not (out / "last.pt").exists() and not (out / "metrics.jsonl").exists()


def test_dali_reads_every_format_as_the_cpu_reader(tmp_path):
    """The frame cache and the DALI loader decode with DALI: the same pixels as PIL's reader, or a refusal."""
    pytest.importorskip("nvidia.dali")
    from rdfer.data.dali import make_dali_loader
    from rdfer.data.records import ClipRecord, Split

    makers = [_sixteen_bit, _grey, _palette, _opaque_rgba, _cmyk_jpeg, _exif_rotated_jpeg]
    for make in makers:
        clip = tmp_path / make.__name__
        clip.mkdir()
        for i in range(2):
            make(clip / f"{i}{'.jpg' if 'jpeg' in make.__name__ else '.png'}")
        split = Split("formats", "test", ("a",), [ClipRecord(0, clip.name, clip, 0)])
        args = dict(batch_size=1, train=False, num_frames=2, image_size=SIZE, skip_bad=False, device="cpu")
        loader = make_dali_loader(split, **args, threads=1)
        (batch,) = list(loader)
        assert loader.dali_batches == 1, make.__name__  # decoded by DALI, not by its CPU fallback
        expected = read_frame_files(sorted(clip.iterdir()), np.arange(2), SIZE)
        got = batch["frames"].numpy().transpose(0, 1, 3, 4, 2)[0]
        assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1, make.__name__
