"""Split readers against the real split files (exact counts) and small bad files written in tmp_path."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from rdfer.data.datasets import DATASETS, load_split, manifest_files, num_folds
from rdfer.data.dfew import DFEW_CLASSES, dfew_split_file, read_dfew
from rdfer.data.ferv39k import FERV39K_CLASSES, ferv39k_split_file, read_ferv39k
from rdfer.data.mafw import MAFW_CLASSES, mafw_split_file, read_mafw
from rdfer.data.manifest import read_manifest
from rdfer.data.records import DataError
from rdfer.errors import ConfigError


@pytest.fixture
def dfew(datasets) -> Path:
    return datasets / "dfew"


@pytest.fixture
def ferv(datasets) -> Path:
    return datasets / "ferv39k"


@pytest.fixture
def mafw(datasets) -> Path:
    return datasets / "mafw"


def _labels(split) -> dict[str, str]:
    return {r.key: split.classes[r.label] for r in split.records}


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ---------------------------------------------------------------- DFEW, real files


def test_dfew_fold1_exact_counts(dfew):
    train = read_dfew(dfew, "train", 1)
    test = read_dfew(dfew, "test", 1)
    assert (len(train), len(test)) == (9356, 2341)
    assert train.class_counts() == [1956, 1515, 2135, 1738, 1175, 116, 721]
    assert train.classes == DFEW_CLASSES and train.dataset == "dfew" and train.name == "train"
    assert [r.sample_id for r in train.records] == list(range(9356))
    # First data row of the file is "2522,6": label 6 is the 6th class, disgust.
    first = train.records[0]
    assert (first.key, DFEW_CLASSES[first.label]) == ("02522", "disgust")
    assert first.path == dfew / "Clip" / "clip_224x224" / "02522"


@pytest.mark.parametrize("fold", [1, 2, 3, 4, 5])
def test_dfew_every_fold_covers_all_clips_once(fold, dfew):
    train = {r.key for r in read_dfew(dfew, "train", fold).records}
    test = {r.key for r in read_dfew(dfew, "test", fold).records}
    assert len(train | test) == 11697
    assert not train & test


def test_dfew_folds_agree_with_frame_counts_and_each_other(dfew):
    rows = (dfew / "frame_counts.csv").read_text().splitlines()[1:]
    ids = {f"{int(line.split(',')[0]):05d}" for line in rows}
    tests = [{r.key for r in read_dfew(dfew, "test", k).records} for k in range(1, 6)]
    assert set().union(*tests) == ids  # the 5 test folds partition the dataset
    assert sum(map(len, tests)) == 11697
    labels: dict[str, str] = {}
    for k in range(1, 6):
        for split in ("train", "test"):
            for key, word in _labels(read_dfew(dfew, split, k)).items():
                assert labels.setdefault(key, word) == word, f"clip {key} changes label in fold {k}"


def test_dfew_video_source_points_at_original(tmp_path, dfew):
    # A copy of the fold-1 test file in a fake root with two of its clips present as videos.
    root = tmp_path / "dfew"
    shutil.copytree(dfew / "EmoLabel_DataSplit", root / "EmoLabel_DataSplit")
    originals = root / "Clip" / "original"
    originals.mkdir(parents=True)
    (originals / "00001.webm").write_bytes(b"")
    (originals / "00002.avi").write_bytes(b"")
    (originals / "00002.mp4").write_bytes(b"")  # two files for one id: the preference order picks .mp4
    split = read_dfew(root, "test", 1, source="video")
    paths = {r.key: r.path for r in split.records}
    assert paths["00001"] == originals / "00001.webm"
    assert paths["00002"] == originals / "00002.mp4"
    assert paths["00004"] == originals / "00004.mp4"  # absent: a path that verify reports as missing
    assert len(split) == 2341


# ---------------------------------------------------------------- FERV39K, real files


def test_ferv39k_exact_counts_and_first_line_kept(ferv):
    train = read_ferv39k(ferv, "train")
    test = read_ferv39k(ferv, "test")
    assert (len(train), len(test)) == (31088, 7847)
    first_line = ferv39k_split_file(ferv, "train").read_text().splitlines()[0]
    assert first_line == "Crime/Angry/0063 Angry"
    assert (train.records[0].key, FERV39K_CLASSES[train.records[0].label]) == ("Crime/Angry/0063", "Angry")
    assert train.records[0].path == ferv / "2_ClipsforFaceCrop" / "Crime" / "Angry" / "0063"
    assert train.classes == ("Happy", "Sad", "Neutral", "Angry", "Surprise", "Disgust", "Fear")
    assert train.class_counts() == [5854, 5523, 7790, 5906, 2502, 1833, 1680]
    assert test.class_counts() == [1473, 1393, 1958, 1487, 638, 467, 431]
    # Every clip of the frame-count list is in exactly one split.
    listed = {line.split(",")[0] for line in (ferv / "frame_counts.csv").read_text().splitlines()[1:]}
    keys_train, keys_test = {r.key for r in train.records}, {r.key for r in test.records}
    assert keys_train | keys_test == listed and not keys_train & keys_test


def test_ferv39k_label_is_the_class_word_of_each_line(ferv):
    split = read_ferv39k(ferv, "test")
    lines = ferv39k_split_file(ferv, "test").read_text().splitlines()
    assert [(r.key, split.classes[r.label]) for r in split.records] == [tuple(line.split()) for line in lines]


# ---------------------------------------------------------------- MAFW, real files


def test_mafw_fold1_counts_and_word_mapping(mafw):
    train = read_mafw(mafw, "train", 1)
    test = read_mafw(mafw, "test", 1)
    assert (len(train), len(test)) == (7333, 1839)
    assert train.classes == tuple(sorted(MAFW_CLASSES)) and len(MAFW_CLASSES) == 11
    assert dict(zip(train.classes, train.class_counts(), strict=True)) == {
        "anger": 1112,
        "anxiety": 732,
        "contempt": 188,
        "disappointment": 145,
        "disgust": 511,
        "fear": 500,
        "happiness": 993,
        "helplessness": 209,
        "neutral": 910,
        "sadness": 1176,
        "surprise": 857,
    }
    assert test.class_counts() == [278, 184, 48, 37, 128, 125, 249, 53, 228, 294, 215]
    lines = mafw_split_file(mafw, "train", 1).read_text().splitlines()
    assert [(r.key, train.classes[r.label]) for r in train.records] == [tuple(line.split()) for line in lines]
    assert train.records[0].path == mafw / "data" / "clips" / "03747.mp4"


@pytest.mark.parametrize("fold", [1, 2, 3, 4, 5])
def test_mafw_every_fold_covers_all_clips_once(fold, mafw):
    train = {r.key for r in read_mafw(mafw, "train", fold).records}
    test = {r.key for r in read_mafw(mafw, "test", fold).records}
    assert len(train | test) == 9172 and not train & test


def test_mafw_folders_are_options(tmp_path, mafw):
    split_dir = tmp_path / "anno"
    shutil.copytree(mafw / "split", split_dir)
    frames = read_mafw(tmp_path, "train", 1, split_dir="anno", source="frames")
    assert frames.records[0].path == tmp_path / "data" / "frames" / "03747"
    custom = read_mafw(tmp_path, "test", 1, split_dir=split_dir, clips_dir="/videos", frames_dir="f")
    assert custom.records[0].path == Path("/videos/00025.mp4") and len(custom) == 1839


# ---------------------------------------------------------------- row order never decides labels


@pytest.mark.parametrize("dataset", ["dfew", "ferv39k", "mafw"])
def test_labels_do_not_depend_on_row_order(tmp_path, dataset, datasets):
    src, root = datasets / dataset, tmp_path / dataset
    files = {
        "dfew": lambda r: dfew_split_file(r, "train", 1),
        "ferv39k": lambda r: ferv39k_split_file(r, "train"),
        "mafw": lambda r: mafw_split_file(r, "train", 1),
    }[dataset]
    lines = files(src).read_text().splitlines()
    header, rows = (lines[:1], lines[1:]) if dataset == "dfew" else ([], lines)
    random.Random(0).shuffle(rows)
    _write(files(root), "\n".join(header + rows) + "\n")
    original, shuffled = load_split(dataset, src, "train"), load_split(dataset, root, "train")
    assert shuffled.classes == original.classes
    assert _labels(shuffled) == _labels(original)
    assert [r.key for r in shuffled.records] != [r.key for r in original.records]


# ---------------------------------------------------------------- bad split files


def _dfew_root(tmp_path: Path, body: str) -> Path:
    _write(dfew_split_file(tmp_path, "train", 1), body)
    return tmp_path


@pytest.mark.parametrize(
    ("body", "line", "problem"),
    [
        ("id,label\n1,2\n", 1, "header"),
        ("1,2\n2,3\n", 1, "header"),  # a file without its header is not silently read from line 2
        ("", 1, "header"),
        ("video_name,label\n1,2\n2,8\n", 3, "label must be 1..7"),
        ("video_name,label\n1,0\n", 2, "label must be 1..7"),
        ("video_name,label\n1,happy\n", 2, "label must be an integer"),
        ("video_name,label\nx,1\n", 2, "video_name must be an integer"),
        ("video_name,label\n1,2,3\n", 2, "expected 2 fields"),
        ("video_name,label\n1,2\n\n1,3\n", 4, "listed twice"),
    ],
)
def test_dfew_bad_file_names_file_line_and_problem(tmp_path, body, line, problem):
    root = _dfew_root(tmp_path, body)
    with pytest.raises(DataError) as err:
        read_dfew(root, "train", 1)
    msg = str(err.value)
    assert f"set_1.csv:{line}:" in msg and problem in msg


def test_dfew_accepts_bom_crlf_and_blank_lines(tmp_path):
    path = _write(dfew_split_file(tmp_path, "train", 1), "")
    path.write_bytes(b"\xef\xbb\xbfvideo_name,label\r\n7,1\r\n\r\n12345,7\r\n")
    split = read_dfew(tmp_path, "train", 1)
    assert [(r.key, r.label) for r in split.records] == [("00007", 0), ("12345", 6)]


@pytest.mark.parametrize(
    ("read", "name"),
    [
        (lambda root: read_dfew(root, "test", 2), "set_2.csv"),
        (lambda root: read_ferv39k(root, "train"), "train_All.csv"),
        (lambda root: read_mafw(root, "test", 3), "set_3/test.txt"),
        (lambda root: read_manifest(root / "train.csv"), "train.csv"),
        (lambda root: load_split("manifest", root / "mine_train.csv", "test"), "mine_test.csv"),
    ],
)
def test_missing_split_file_names_the_file(tmp_path, read, name):
    with pytest.raises(DataError, match="not found") as err:
        read(tmp_path)
    assert name in str(err.value) and str(tmp_path) in str(err.value)


def test_ferv39k_unknown_word_and_bad_lines(tmp_path):
    path = ferv39k_split_file(tmp_path, "train")
    _write(path, "A/Happy/0001 Happy\nA/Sad/0002 sad\nA/Joy/0003 Joy\n")
    with pytest.raises(DataError, match=r"train_All\.csv:3: unknown class word 'Joy'"):
        read_ferv39k(tmp_path, "train")
    for body, problem in [
        ("A/Happy/0001\n", "expected"),
        ("Happy/0001 Happy\n", "<Scene>/<Class>/<id>"),
        ("A/Happy/1 Happy\nA/Happy/1 Happy\n", "listed twice"),
    ]:
        _write(path, body)
        with pytest.raises(DataError, match=r"train_All\.csv:\d+: ") as err:
            read_ferv39k(tmp_path, "train")
        assert problem in str(err.value)
    with pytest.raises(ConfigError, match="frame folders only"):
        read_ferv39k(tmp_path, "train", source="video")


def test_ferv39k_label_column_wins_over_path(tmp_path, caplog):
    _write(ferv39k_split_file(tmp_path, "test"), "A/Happy/0001 Sad\nA/Fear/0002 FEAR\n")
    split = read_ferv39k(tmp_path, "test")
    assert [split.classes[r.label] for r in split.records] == ["Sad", "Fear"]
    assert "1 line(s)" in caplog.text and "test_All.csv" in caplog.text


def test_mafw_unknown_word_names_file_and_line(tmp_path):
    _write(mafw_split_file(tmp_path, "train", 1), "00001.mp4 anger\n00002.mp4 joy\n")
    with pytest.raises(DataError, match=r"set_1/train\.txt:2: unknown class word 'joy'"):
        read_mafw(tmp_path, "train", 1)
    _write(mafw_split_file(tmp_path, "train", 1), "00001.mp4\n")
    with pytest.raises(DataError, match=r"train\.txt:1: expected"):
        read_mafw(tmp_path, "train", 1)


# ---------------------------------------------------------------- manifest


def test_manifest_words_ints_and_paths(tmp_path):
    csv = _write(
        tmp_path / "m" / "train.csv", 'path,label\nclips/a,happy\n/abs/b.mp4,Sad\nclips/c,0\n"clips/d, e",2\n'
    )
    split = read_manifest(csv, classes=["happy", "sad", "neutral"])
    assert [(r.key, r.label) for r in split.records] == [
        ("clips/a", 0),
        ("/abs/b.mp4", 1),
        ("clips/c", 0),
        ("clips/d, e", 2),
    ]
    assert split.records[0].path == tmp_path / "m" / "clips" / "a"
    assert split.records[1].path == Path("/abs/b.mp4")
    assert split.dataset == "manifest" and split.classes == ("happy", "sad", "neutral")


def test_manifest_classes_from_words_are_sorted_and_ints_alone_are_indices(tmp_path):
    words = read_manifest(_write(tmp_path / "w.csv", "path,label\na,sad\nb,angry\nc,sad\n"))
    assert words.classes == ("angry", "sad") and [r.label for r in words.records] == [1, 0, 1]
    ints = read_manifest(_write(tmp_path / "i.csv", "path,label\na,2\nb,0\n"))
    assert ints.classes == ("0", "1", "2") and [r.label for r in ints.records] == [2, 0]


@pytest.mark.parametrize(
    ("body", "classes", "problem"),
    [
        ("file,label\na,x\n", None, ":1: expected the header"),
        ("path,label\na,happy\nb,1\n", None, ":3: the manifest mixes"),
        ("path,label\na,joy\n", ["happy", "sad"], ":2: unknown class word 'joy'"),
        ("path,label\na,2\n", ["happy", "sad"], ":2: label index 2 is outside 0..1"),
        ("path,label\na,-1\n", ["happy", "sad"], ":2: label index -1 is outside 0..1"),
        ("path,label\n,happy\n", ["happy"], ":2: empty path"),
        ("path,label\na,happy\na,happy\n", ["happy"], ":3: a is listed twice"),
        ("path,label\na,happy\n", ["happy", "Happy"], "differ only by case"),
        ("path,label\n", None, "lists no clips"),
    ],
)
def test_manifest_bad_input_names_file(tmp_path, body, classes, problem):
    csv = _write(tmp_path / "bad.csv", body)
    with pytest.raises(DataError) as err:
        read_manifest(csv, classes)
    assert str(csv) in str(err.value) and problem in str(err.value)


def test_manifest_test_split_uses_train_classes(tmp_path):
    train = _write(tmp_path / "faces_train.csv", "path,label\na,sad\nb,angry\nc,happy\n")
    _write(tmp_path / "faces_test.csv", "path,label\nd,sad\ne,happy\n")
    test = load_split("manifest", train, "test")
    assert test.classes == ("angry", "happy", "sad") and [r.label for r in test.records] == [2, 1]
    assert read_manifest(tmp_path / "faces_test.csv").classes == ("happy", "sad")  # alone it would differ
    other = _write(tmp_path / "elsewhere.csv", "path,label\nx,angry\n")
    assert load_split("manifest", train, "test", test_manifest=other).records[0].key == "x"
    assert manifest_files(tmp_path / "faces_train.csv") == (train, tmp_path / "faces_test.csv")
    _write(tmp_path / "dir" / "train.csv", "path,label\na,1\n")
    assert manifest_files(tmp_path / "dir") == (tmp_path / "dir" / "train.csv", tmp_path / "dir" / "test.csv")
    with pytest.raises(DataError, match="pass test_manifest"):
        load_split("manifest", _write(tmp_path / "mine.csv", "path,label\na,b\n"), "test")


# ---------------------------------------------------------------- registry


def test_registry_and_folds():
    assert DATASETS == ("dfew", "ferv39k", "mafw", "manifest", "synthetic")
    assert [num_folds(d) for d in DATASETS] == [5, 1, 5, 1, 1]
    with pytest.raises(ConfigError, match="unknown dataset 'affwild'"):
        num_folds("affwild")


@pytest.mark.parametrize(
    ("dataset", "fold", "split", "options", "problem"),
    [
        ("dfew", 0, "train", {}, "folds 1..5, not fold 0"),
        ("mafw", 6, "train", {}, "folds 1..5, not fold 6"),
        ("ferv39k", 2, "train", {}, "fold 1 only"),
        ("synthetic", 2, "train", {}, "fold 1 only"),
        ("dfew", 1, "val", {}, "split must be one of train, test"),
        ("dfew", 1, "train", {"split_dir": "x"}, "takes no option split_dir"),
        ("nope", 1, "train", {}, "unknown dataset"),
    ],
)
def test_load_split_rejects_bad_arguments(tmp_path, dataset, fold, split, options, problem):
    with pytest.raises(ConfigError, match=problem) as err:
        load_split(dataset, tmp_path, split, fold, **options)
    if "fold" in problem:
        assert str(tmp_path) in str(err.value)


def test_synthetic_reads_the_dfew_layout(tmp_path):
    _write(dfew_split_file(tmp_path, "test", 1), "video_name,label\n3,4\n")
    split = load_split("synthetic", tmp_path, "test", source="video")
    assert split.dataset == "synthetic" and split.classes == DFEW_CLASSES
    assert [(r.key, r.label, r.path) for r in split.records] == [
        ("00003", 3, tmp_path / "Clip" / "original" / "00003.mp4")
    ]


def test_registry_dispatch_matches_readers(dfew, ferv, mafw):
    assert _labels(load_split("mafw", mafw, "test", 2)) == _labels(read_mafw(mafw, "test", 2))
    assert _labels(load_split("dfew", dfew, "train", 4)) == _labels(read_dfew(dfew, "train", 4))
    assert len(load_split("ferv39k", ferv, "test")) == 7847
