"""The build: finding the CUDA toolkit, the architecture list, the build record, and what rdfer says when its
extension is missing or was built for another torch.

The toolkit finder runs on fake toolkit trees under tmp_path (an nvcc wrapper script, a symlink, a missing
libcudart.so, a CUDA_HOME that is no toolkit); nothing here needs a compiler or a GPU, except the `cuda` case.
"""

import importlib.util
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from conftest import DEVICES

from rdfer.ops import dispatch

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("extension_build", ROOT / "extension_build.py")
eb = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(eb)

ELF = b"\x7fELF\x02\x01\x01" + bytes(57)  # the start of an ELF header: a real (compiled) nvcc, not a script


def make_toolkit(home: Path, version=(13, 0), lib="lib64", cudart=True) -> Path:
    """A fake CUDA toolkit: bin/nvcc, include/cuda_runtime_api.h with CUDART_VERSION, lib/libcudart.so."""
    (home / "bin").mkdir(parents=True)
    nvcc = home / "bin" / "nvcc"
    nvcc.write_bytes(ELF)
    nvcc.chmod(0o755)
    (home / "include").mkdir()
    number = version[0] * 1000 + version[1] * 10
    (home / "include" / "cuda_runtime_api.h").write_text(f"#define CUDART_VERSION  {number}\n")
    (home / lib).mkdir(parents=True)
    (home / lib / "libcudart.so.13").write_bytes(ELF)
    if cudart:
        (home / lib / "libcudart.so").symlink_to("libcudart.so.13")
    return home


def write_script(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def find(environ, tmp_path, torch_cuda="13.0"):
    """find_toolkit with /usr/local replaced by tmp_path/local, so the machine's own toolkit plays no part."""
    (tmp_path / "local").mkdir(exist_ok=True)
    return eb.find_toolkit(environ, torch_cuda, prefix=str(tmp_path / "local"))


# --- the toolkit finder -------------------------------------------------------------------------------------


def test_cuda_home_that_is_a_toolkit_is_used(tmp_path):
    home = make_toolkit(tmp_path / "cuda")
    search = find({"CUDA_HOME": str(home), "PATH": ""}, tmp_path)
    assert search.toolkit == eb.Toolkit(str(home), str(home / "lib64"), (13, 0))
    assert search.rejected == []


def test_nvcc_wrapper_script_leads_to_the_toolkit_it_calls(tmp_path):
    """The machine's case: /usr/local/bin/nvcc is `exec /usr/local/cuda-13.0/bin/nvcc "$@"`, so torch's own
    guess (the wrapper's grandparent, /usr/local) has no libcudart and the link fails."""
    home = make_toolkit(tmp_path / "opt" / "cuda-13.0")
    bin_dir = tmp_path / "wrappers" / "bin"
    write_script(bin_dir / "nvcc", f'#!/bin/sh\nexec {home}/bin/nvcc "$@"\n')
    search = find({"PATH": str(bin_dir)}, tmp_path)
    assert search.toolkit is not None and search.toolkit.home == str(home)


def test_wrapper_naming_no_toolkit_falls_through_to_the_default_location(tmp_path):
    bin_dir = tmp_path / "wrappers" / "bin"
    write_script(bin_dir / "nvcc", '#!/bin/sh\nexec "$MY_CUDA/bin/nvcc" "$@"\n')
    home = make_toolkit(tmp_path / "local" / "cuda")
    search = find({"PATH": str(bin_dir)}, tmp_path)
    assert search.toolkit is not None and search.toolkit.home == str(home)
    assert len(search.rejected) == 1 and "wrapper script naming no toolkit" in search.rejected[0][0]


def test_symlinked_nvcc_is_followed_to_its_toolkit(tmp_path):
    home = make_toolkit(tmp_path / "opt" / "cuda-13.0")
    bin_dir = tmp_path / "links"
    bin_dir.mkdir()
    (bin_dir / "nvcc").symlink_to(home / "bin" / "nvcc")
    search = find({"PATH": str(bin_dir)}, tmp_path)
    assert search.toolkit is not None and search.toolkit.home == str(home)


def test_toolkit_without_libcudart_so_is_rejected_before_compiling(tmp_path):
    bad = make_toolkit(tmp_path / "local" / "cuda", cudart=False)  # libcudart.so.13 only: -lcudart fails
    search = find({"PATH": ""}, tmp_path)
    assert search.toolkit is None
    assert search.rejected == [(f"{bad} (the default location)", eb.examine(str(bad)))]
    assert "libcudart.so" in search.rejected[0][1]


def test_runtime_library_under_targets_is_found(tmp_path):
    home = make_toolkit(tmp_path / "cuda", lib="targets/x86_64-linux/lib")
    search = find({"CUDA_PATH": str(home), "PATH": ""}, tmp_path)
    assert search.toolkit is not None and search.toolkit.lib_dir == str(home / "targets/x86_64-linux/lib")


def test_bad_cuda_home_is_reported_and_skipped(tmp_path):
    (tmp_path / "not-cuda").mkdir()
    home = make_toolkit(tmp_path / "local" / "cuda-13.0")
    search = find({"CUDA_HOME": str(tmp_path / "not-cuda"), "PATH": ""}, tmp_path)
    assert search.toolkit is not None and search.toolkit.home == str(home)
    assert search.rejected == [(f"{tmp_path / 'not-cuda'} ($CUDA_HOME)", "no executable bin/nvcc")]


def test_toolkit_of_another_cuda_major_is_skipped_and_newest_versioned_first(tmp_path):
    make_toolkit(tmp_path / "local" / "cuda-12.4", version=(12, 4))
    make_toolkit(tmp_path / "local" / "cuda-13.0", version=(13, 0))
    make_toolkit(tmp_path / "local" / "cuda-13.1", version=(13, 1))
    old = tmp_path / "local" / "cuda"
    old.symlink_to(tmp_path / "local" / "cuda-12.4")
    search = find({"PATH": ""}, tmp_path)
    assert search.toolkit.home == str(tmp_path / "local" / "cuda-13.1")
    assert search.rejected == [
        (f"{old} (the default location)", "CUDA 12.4, but torch was built with CUDA 13.0")
    ]


def test_nothing_found_makes_cuda_optional_only_without_gpu_and_without_any_install(tmp_path):
    search = find({"PATH": ""}, tmp_path)
    assert search == eb.Search(None, [])
    assert eb.cuda_requirement(forced=False, gpu_visible=False, search=search) is None
    assert "GPU" in eb.cuda_requirement(forced=False, gpu_visible=True, search=search)
    assert "RDFER_FORCE_CUDA_BUILD" in eb.cuda_requirement(forced=True, gpu_visible=False, search=search)
    seen = eb.Search(None, [("/usr/local/cuda (the default location)", "no executable bin/nvcc")])
    assert eb.cuda_requirement(forced=False, gpu_visible=False, search=seen) == "a CUDA install was seen"


def test_not_found_message_says_what_was_found_and_what_to_do():
    search = eb.Search(
        None, [("/usr/local (nvcc on PATH: /usr/local/bin/nvcc)", "no include/cuda_runtime_api.h")]
    )
    message = eb.not_found_message(search, "2.14.1+cu130", "13.0", "a GPU is visible")
    assert "a GPU is visible" in message and "torch 2.14.1+cu130 (CUDA 13.0)" in message
    assert "/usr/local (nvcc on PATH: /usr/local/bin/nvcc): no include/cuda_runtime_api.h" in message
    assert "CUDA 13.x toolkit" in message and "CUDA_HOME" in message and "RDFER_SKIP_CUDA_BUILD=1" in message


# --- architectures ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["8.0;9.0;12.0+PTX", "80;90;120+PTX", "8.0 9.0 12.0+PTX", " 80, 9.0 ;120+ptx ", "8.0;;9.0;12.0+PTX;"],
)
def test_both_arch_spellings_and_separators_parse_alike(text):
    assert eb.parse_archs(text) == [eb.Arch(8, 0), eb.Arch(9, 0), eb.Arch(12, 0, ptx=True)]


def test_arch_suffixes_and_gencode_flags():
    archs = eb.parse_archs("9.0a;100a;8.6+PTX")
    assert [str(a) for a in archs] == ["9.0a", "10.0a", "8.6+PTX"]
    assert eb.gencode_flags(archs) == [
        "-gencode=arch=compute_90a,code=sm_90a",
        "-gencode=arch=compute_100a,code=sm_100a",
        "-gencode=arch=compute_86,code=sm_86",
        "-gencode=arch=compute_86,code=compute_86",
    ]


@pytest.mark.parametrize("text", ["sm_80", "8", "8.0.1", "Hoppr", "9.0b", "8.0+SASS", ";", ""])
def test_invalid_arch_is_a_clear_error(text):
    with pytest.raises(ValueError, match="RDFER_CUDA_ARCHS") as error:
        eb.parse_archs(text)
    assert "8.0;9.0;12.0+PTX" in str(error.value)


NVCC_13 = {f"sm_{n}" for n in (75, 80, 86, 87, 88, 89, 90, 100, 103, 110, 120, 121)}


def test_torch_arch_names_and_native_parse_as_torch_expands_them():
    assert [str(a) for a in eb.parse_archs("Ampere;hopper")] == ["8.0", "8.6+PTX", "9.0+PTX"]
    assert [str(a) for a in eb.parse_archs("Blackwell")] == ["10.0", "10.3", "12.0", "12.1+PTX"]
    # native: each visible GPU once, the newest also as PTX.
    assert [str(a) for a in eb.parse_archs("native", native=[(9, 0), (8, 0), (9, 0)])] == ["8.0", "9.0+PTX"]
    with pytest.raises(ValueError, match="TORCH_CUDA_ARCH_LIST: 'native' needs a visible GPU"):
        eb.parse_archs("native", "TORCH_CUDA_ARCH_LIST", native=[])


def test_torch_cuda_arch_list_is_what_the_build_uses():
    assert eb.build_archs({"TORCH_CUDA_ARCH_LIST": "8.0 9.0+PTX"}, NVCC_13) == (
        [eb.Arch(8, 0), eb.Arch(9, 0, ptx=True)],
        None,
    )
    # Unset or empty (torch reads an empty one as unset): the default.
    default = eb.parse_archs(eb.DEFAULT_ARCHS)
    assert (
        eb.build_archs({"TORCH_CUDA_ARCH_LIST": " "}, NVCC_13)
        == eb.build_archs({}, NVCC_13)
        == (default, None)
    )


def test_rdfer_cuda_archs_is_an_alias_that_wins_and_says_so():
    assert eb.build_archs({"RDFER_CUDA_ARCHS": "90a"}, NVCC_13) == ([eb.Arch(9, 0, "a")], None)
    same = {"RDFER_CUDA_ARCHS": "80 90", "TORCH_CUDA_ARCH_LIST": "8.0;9.0"}  # one list in two spellings
    assert eb.build_archs(same, NVCC_13) == ([eb.Arch(8, 0), eb.Arch(9, 0)], None)
    both = {"RDFER_CUDA_ARCHS": "9.0", "TORCH_CUDA_ARCH_LIST": "Ampere"}
    archs, note = eb.build_archs(both, NVCC_13)
    assert archs == [eb.Arch(9, 0)]
    assert note == "RDFER_CUDA_ARCHS='9.0' wins over TORCH_CUDA_ARCH_LIST='Ampere'"


@pytest.mark.parametrize("variable", eb.ARCH_VARIABLES)
def test_bad_arch_list_names_the_variable_it_came_from(variable):
    with pytest.raises(ValueError, match=f"^{variable}: 'Hoppr' is not a CUDA architecture"):
        eb.build_archs({variable: "8.0;Hoppr"}, NVCC_13)
    with pytest.raises(ValueError, match=rf"^{variable}: this nvcc cannot compile for 13\.0"):
        eb.build_archs({variable: "9.0;13.0+PTX"}, NVCC_13)


def test_default_archs_embed_ptx_of_the_newest():
    archs = eb.choose_archs(None, NVCC_13)
    assert ";".join(map(str, archs)) == eb.DEFAULT_ARCHS == "7.5;8.0;8.6;9.0;10.0;12.0+PTX"


def test_default_archs_are_cut_to_what_an_older_nvcc_supports():
    older = {f"sm_{n}" for n in (50, 60, 70, 75, 80, 86, 89, 90)}
    assert ";".join(map(str, eb.choose_archs(None, older))) == "7.5;8.0;8.6;9.0+PTX"


def test_requested_arch_this_nvcc_lacks_is_a_clear_error():
    assert eb.choose_archs("80 90a", NVCC_13) == [eb.Arch(8, 0), eb.Arch(9, 0, "a")]
    with pytest.raises(ValueError, match=r"cannot compile for 13\.0.*supports sm_75, sm_80"):
        eb.choose_archs("9.0;13.0+PTX", NVCC_13)


# --- the build record and setup.py --------------------------------------------------------------------------


def test_build_record_round_trips():
    text = eb.build_record("2.14.1+cu130", "13.0", eb.parse_archs("80;120+PTX"), "/src/rdfer")
    record = {}
    exec(text, record)
    assert (record["TORCH_VERSION"], record["TORCH_CUDA"]) == ("2.14.1+cu130", "13.0")
    assert (record["CUDA_ARCHS"], record["SOURCE_DIR"]) == ("8.0;12.0+PTX", "/src/rdfer")
    cpu = {}
    exec(eb.build_record("2.13.0+cpu", None, [], "/src/rdfer"), cpu)
    assert cpu["TORCH_CUDA"] is None and cpu["CUDA_ARCHS"] == ""


def run_setup_without_torch(*argv):
    """setup.py as an isolated pip build runs it: no torch importable."""
    code = (
        "import sys; sys.modules['torch'] = None; "
        f"sys.argv = ['setup.py', *{list(argv)!r}]; "
        "exec(compile(open('setup.py').read(), 'setup.py', 'exec'), "
        "{'__file__': 'setup.py', '__name__': '__main__'})"
    )
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("command", ["build_ext", "dist_info"])  # dist_info: pip's step before fetching deps
def test_build_without_torch_stops_naming_no_build_isolation(command, tmp_path):
    result = run_setup_without_torch(
        command, "--dry-run" if command == "build_ext" else f"--output-dir={tmp_path}"
    )
    assert result.returncode != 0
    assert "torch is not importable" in result.stderr and "--no-build-isolation" in result.stderr


def test_metadata_questions_need_no_torch():
    result = run_setup_without_torch("--name")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "rdfer"


# --- what rdfer says about its extension --------------------------------------------------------------------


@pytest.fixture
def fresh_dispatch(monkeypatch):
    """dispatch's once-per-process decision and warning, redone for this test and again after it."""
    monkeypatch.delenv("RDFER_KERNELS", raising=False)
    dispatch._load.cache_clear()
    monkeypatch.setattr(dispatch, "_reported", set())
    yield
    dispatch._load.cache_clear()


def record(torch_version=torch.__version__, torch_cuda=torch.version.cuda, archs="", source=str(ROOT)):
    return types.SimpleNamespace(
        TORCH_VERSION=torch_version, TORCH_CUDA=torch_cuda, CUDA_ARCHS=archs, SOURCE_DIR=source
    )


def forbid_import(monkeypatch):
    def refuse(name, *args):
        raise AssertionError(f"{name} must not be imported when it was built for another torch")

    monkeypatch.setattr(dispatch.importlib, "import_module", refuse)


def test_mismatched_build_warns_once_with_both_versions_and_the_fix(fresh_dispatch, monkeypatch, recwarn):
    monkeypatch.setattr(dispatch, "build_record", lambda: record("2.0.0+cu118", "11.8", "8.0;9.0"))
    forbid_import(monkeypatch)
    assert dispatch.extension() is None
    assert dispatch.extension() is None
    warnings = [w for w in recwarn if issubclass(w.category, dispatch.ExtensionWarning)]
    assert len(warnings) == 1
    message = str(warnings[0].message)
    assert "built for torch 2.0.0+cu118 (CUDA 11.8)" in message
    installed = f"CUDA {torch.version.cuda}" if torch.version.cuda else "no CUDA"
    assert f"but torch {torch.__version__} ({installed}) is installed" in message
    assert f"-m pip install --no-build-isolation -e {ROOT}" in message


def test_mismatched_build_is_an_error_under_fast(fresh_dispatch, monkeypatch):
    monkeypatch.setattr(dispatch, "build_record", lambda: record("2.0.0+cu118", "11.8"))
    forbid_import(monkeypatch)
    monkeypatch.setenv("RDFER_KERNELS", "fast")
    with pytest.raises(
        RuntimeError, match=r"RDFER_KERNELS=fast: rdfer\._C was built for torch 2\.0\.0\+cu118"
    ):
        dispatch.extension()


def test_reference_mode_stays_quiet(fresh_dispatch, monkeypatch, recwarn):
    monkeypatch.setattr(dispatch, "build_record", lambda: record("2.0.0", None))
    monkeypatch.setenv("RDFER_KERNELS", "reference")
    assert dispatch.extension() is None
    assert not [w for w in recwarn if issubclass(w.category, dispatch.ExtensionWarning)]


def raising(error):
    def import_module(name, *args):
        raise error

    return import_module


def test_missing_extension_warns_that_it_is_not_built(fresh_dispatch, monkeypatch):
    monkeypatch.setattr(dispatch, "build_record", lambda: None)
    missing = ModuleNotFoundError("No module named 'rdfer._C'", name="rdfer._C")
    monkeypatch.setattr(dispatch.importlib, "import_module", raising(missing))
    with pytest.warns(
        dispatch.ExtensionWarning, match=r"rdfer\._C is not built, so rdfer runs the PyTorch twins"
    ):
        assert dispatch.extension() is None


def test_extension_that_fails_to_load_warns_with_the_loader_error(fresh_dispatch, monkeypatch):
    monkeypatch.setattr(dispatch, "build_record", lambda: record())
    broken = ImportError("_C.so: undefined symbol: _ZN3c104cuda", name="rdfer._C")
    monkeypatch.setattr(dispatch.importlib, "import_module", raising(broken))
    with pytest.warns(dispatch.ExtensionWarning, match=r"cannot be imported \(_C\.so: undefined symbol"):
        assert dispatch.extension() is None


def test_cpu_only_build_on_a_gpu_machine_says_so_once_and_still_loads(fresh_dispatch, monkeypatch, recwarn):
    fake_ext = types.ModuleType("rdfer._C")
    monkeypatch.setattr(dispatch, "build_record", lambda: record(archs=""))
    monkeypatch.setattr(dispatch.importlib, "import_module", lambda name, *args: fake_ext)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv(
        "RDFER_KERNELS", "fast"
    )  # the extension is there: the per-device rule decides, not this
    assert dispatch.extension() is fake_ext
    assert dispatch.extension() is fake_ext
    warnings = [str(w.message) for w in recwarn if issubclass(w.category, dispatch.ExtensionWarning)]
    assert len(warnings) == 1 and "built without CUDA kernels" in warnings[0]


def test_matching_build_loads_quietly(fresh_dispatch, monkeypatch, recwarn):
    fake_ext = types.ModuleType("rdfer._C")
    monkeypatch.setattr(dispatch, "build_record", lambda: record(archs="8.0+PTX"))
    monkeypatch.setattr(dispatch.importlib, "import_module", lambda name, *args: fake_ext)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert dispatch.extension() is fake_ext
    assert not [w for w in recwarn if issubclass(w.category, dispatch.ExtensionWarning)]


def test_rebuild_command_for_an_installed_copy_and_for_a_lost_source(tmp_path):
    (tmp_path / "setup.py").write_text("")
    assert f"--force-reinstall --no-deps {tmp_path}" in dispatch.rebuild_command(record(source=str(tmp_path)))
    gone = dispatch.rebuild_command(record(source=str(tmp_path / "gone")))
    assert gone.endswith("--no-deps <the rdfer source folder>")


# --- the extension this test run uses -----------------------------------------------------------------------

BUILT = dispatch.build_record() is not None and dispatch.extension() is not None


def check_extension(*args):
    return subprocess.run(
        [sys.executable, str(ROOT / ".ci" / "check_extension.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("device", DEVICES)
def test_every_operator_has_a_kernel_for_the_device_and_runs_there(device):
    if device == "cpu" and not BUILT:  # on a GPU, a missing build is the failure this test is for
        pytest.skip("rdfer._C is not built here (RDFER_SKIP_EXT=1)")
    keys = ["CPU", "CUDA"] if device == "cuda" else ["CPU"]
    result = check_extension(*keys)
    assert result.returncode == 0, result.stdout + result.stderr
    listed = next(line for line in result.stdout.splitlines() if " operators: " in line)
    assert "rdfer::gather_clips" in listed.split(" operators: ")[1].split(", ")
    assert f"OK: every operator has {' and '.join(keys)} kernels" in result.stdout
    frames = torch.randint(0, 255, (2, 8, 3, 5, 5), dtype=torch.uint8, device=device)
    indices = torch.randint(0, 8, (2, 3, 4), device=device)
    out = torch.ops.rdfer.gather_clips(frames, indices)  # "no kernel image" here means a missing architecture
    assert torch.equal(out.cpu(), frames.cpu()[torch.arange(2).view(2, 1, 1), indices.cpu()])


@pytest.mark.skipif(
    not BUILT or bool(dispatch.build_record().CUDA_ARCHS), reason="needs a build without CUDA"
)
def test_the_ci_check_fails_on_a_build_without_cuda():
    result = check_extension("CPU", "CUDA", "--cubins")
    assert result.returncode == 1
    assert "FAIL: rdfer::gather_clips has no CUDA kernel" in result.stdout
    assert "FAIL: the build record lists no CUDA architectures" in result.stdout
