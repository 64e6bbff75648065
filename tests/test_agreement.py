"""Cross-clip agreement: hand-worked cases for the twin (rdfer.ops.agreement), then the Triton kernel
(kernels/agreement.py) against the twin, one body per device (tests/conftest.py, KERNEL_DEVICES). On CPU the
kernel runs under the Triton interpreter. Every kernel comparison goes through the op under RDFER_KERNELS=fast
and counts the launch."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch
from conftest import KERNEL_DEVICES, tolerance

from rdfer.kernels.agreement import AGREEMENT_LOGIT_DTYPES
from rdfer.ops.agreement import AgreementParams, agreement, agreement_reference
from rdfer.robust.categories import CATEGORY_NAMES, EASY, HARD, NOISY, Category

NOISY_WEIGHT = 0.1  # the hand-worked cases below use it
FIELDS = ("majority", "agreement", "support", "margin", "ema_rows", "category", "weight", "target")


def logits_of(probs: list[list[list[float]]]) -> torch.Tensor:
    """Clip logits whose softmax is the given clip probabilities."""
    return torch.tensor(probs).log()


# Sample 0 (label 0): clip argmaxes 0, 0, 1, 1 -> a 2-2 tie; mean p = [0.4, 0.5, 0.1] -> majority 1 (larger
#   mean), A = 0.5, S = 0.4, M = 0.1 -> hard, weight 1 + (1 - 0.5) = 1.5.
# Sample 1 (label 2): argmaxes 1, 1, 1, 0 -> majority 1, A = 0.75 (= a_min: agrees);
#   mean p = [0.25, 0.6, 0.15] -> S = 0.15 < 0.2, M = 0.45 -> noisy, weight 0.1.
HAND = logits_of(
    [
        [[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1]],
        [[0.1, 0.8, 0.1], [0.2, 0.7, 0.1], [0.1, 0.6, 0.3], [0.6, 0.3, 0.1]],
    ]
)
HAND_LABELS = torch.tensor([0, 2])


def fresh_memory(n: int = 4) -> torch.Tensor:
    return torch.full((n, 2), float("nan"))


def test_category_codes_and_names():
    assert (EASY, HARD, NOISY) == (Category.EASY, Category.HARD, Category.NOISY) == (0, 1, 2)
    assert CATEGORY_NAMES == ("easy", "hard", "noisy")


def test_twin_hand_worked_batch_leaves_the_memory_alone():
    memory = fresh_memory()
    s = agreement_reference(
        HAND, HAND_LABELS, torch.tensor([3, 1]), memory, AgreementParams(NOISY_WEIGHT), warm=True
    )
    assert s.majority.tolist() == [1, 1]
    torch.testing.assert_close(s.agreement, torch.tensor([0.5, 0.75]))
    torch.testing.assert_close(s.support, torch.tensor([0.4, 0.15]))
    torch.testing.assert_close(s.margin, torch.tensor([0.1, 0.45]))
    assert s.category.tolist() == [HARD, NOISY]
    torch.testing.assert_close(s.weight, torch.tensor([1.5, 0.1]))
    assert s.target.tolist() == [0, 2]
    # First sight: the would-be rows are this batch's values; the memory itself is not written.
    torch.testing.assert_close(s.ema_rows, torch.tensor([[0.5, 0.4], [0.75, 0.15]]))
    assert s.ema_agreement.tolist() == s.ema_rows[:, 0].tolist()
    assert memory.isnan().all()


def test_twin_committed_rows_drive_the_next_category():
    memory = fresh_memory()
    memory[1] = torch.tensor([0.5, 0.8])  # seen before: low agreement, high support
    s = agreement_reference(
        HAND, HAND_LABELS, torch.tensor([3, 1]), memory, AgreementParams(NOISY_WEIGHT), warm=True
    )
    ema = [0.9 * 0.5 + 0.1 * 0.75, 0.9 * 0.8 + 0.1 * 0.15]  # [0.525, 0.735]
    torch.testing.assert_close(s.ema_rows[1], torch.tensor(ema))
    torch.testing.assert_close(s.agreement[1], torch.tensor(0.75))  # this batch's A is still reported
    assert s.category[1] == HARD  # the EMA's A = 0.525 < 0.75
    torch.testing.assert_close(s.weight[1], torch.tensor(1 + (1 - ema[0])))
    memory[torch.tensor([3, 1])] = s.ema_rows  # the caller's commit
    again = agreement_reference(
        HAND, HAND_LABELS, torch.tensor([3, 1]), memory, AgreementParams(NOISY_WEIGHT), warm=True
    )
    torch.testing.assert_close(again.ema_rows[1], 0.9 * torch.tensor(ema) + 0.1 * torch.tensor([0.75, 0.15]))
    # Without the EMA the same sample is noisy again.
    memory[1] = torch.tensor([0.5, 0.8])
    plain = agreement_reference(
        HAND,
        HAND_LABELS,
        torch.tensor([3, 1]),
        memory,
        AgreementParams(NOISY_WEIGHT, use_ema=False),
        warm=True,
    )
    assert plain.category[1] == NOISY


def test_twin_before_warm_up_reports_categories_with_unit_weights():
    params = AgreementParams(NOISY_WEIGHT, relabel=True, relabel_margin=0.4)
    s = agreement_reference(HAND, HAND_LABELS, torch.tensor([0, 1]), fresh_memory(), params, warm=False)
    assert s.category.tolist() == [HARD, NOISY]
    assert s.weight.tolist() == [1.0, 1.0]
    assert s.target.tolist() == [0, 2]


def test_twin_relabel_flips_noisy_samples_with_a_clear_margin():
    params = AgreementParams(NOISY_WEIGHT, relabel=True, relabel_margin=0.4)  # M = 0.45 > 0.4
    s = agreement_reference(HAND, HAND_LABELS, torch.tensor([0, 1]), fresh_memory(), params, warm=True)
    assert s.target.tolist() == [0, 1]
    torch.testing.assert_close(s.weight, torch.tensor([1.5, 1.0]))
    params = AgreementParams(NOISY_WEIGHT, relabel=True, relabel_margin=0.5)  # M = 0.45
    kept = agreement_reference(HAND, HAND_LABELS, torch.tensor([0, 1]), fresh_memory(), params, warm=True)
    assert kept.target.tolist() == [0, 2]
    torch.testing.assert_close(kept.weight, torch.tensor([1.5, 0.1]))


def test_twin_easy_sample_and_exact_tie_go_to_the_lower_class():
    # Sample 0: all clips vote 2 = label -> easy, weight 1. Sample 1: equal logits in every clip -> each
    # clip's argmax is the first maximum, class 0.
    logits = torch.stack([logits_of([[[0.1, 0.1, 0.8]] * 4])[0], torch.zeros(4, 3)])
    s = agreement_reference(
        logits,
        torch.tensor([2, 1]),
        torch.tensor([0, 1]),
        fresh_memory(),
        AgreementParams(NOISY_WEIGHT),
        warm=True,
    )
    assert s.majority.tolist() == [2, 0]
    assert s.category.tolist() == [EASY, HARD]  # sample 1: A = 1 but m != y and S = 1/3 >= 0.2
    torch.testing.assert_close(s.weight, torch.tensor([1.0, 1.0 + 0.0]))


# ------------------------------------------------------------------------------------------------ kernel

triton = pytest.importorskip("triton")
from rdfer.kernels import _launch  # noqa: E402
from rdfer.kernels import agreement as kernel_module  # noqa: E402


def random_batch(b, k, c, seed, device, n_extra=7):
    g = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(b, k, c, generator=g)
    labels = torch.randint(0, c, (b,), generator=g)
    n = b + n_extra
    ids = torch.randperm(n, generator=g)[:b]
    memory = torch.rand(n, 2, generator=g)
    memory[torch.rand(n, generator=g) < 0.4] = float("nan")  # some samples unseen
    return [t.to(device) for t in (logits, labels, ids, memory)]


def assert_same(kernel_stats, twin_stats):
    for name in FIELDS:
        got, want = getattr(kernel_stats, name), getattr(twin_stats, name)
        assert got.dtype == want.dtype and got.shape == want.shape, name
        if got.is_floating_point():
            torch.testing.assert_close(
                got, want, **tolerance(got.device, "agreement"), equal_nan=True, msg=name
            )
        else:
            assert torch.equal(got, want), name


@pytest.fixture
def compare(monkeypatch, count_launches):
    """compare(logits, labels, ids, memory, params, warm): the op under RDFER_KERNELS=fast (one counted
    launch) against the twin; neither may write the memory. Returns the kernel's stats and the launch's
    options."""

    def run(logits, labels, ids, memory, params, warm):
        counts = count_launches({"n": (kernel_module, "_agreement_kernel")})
        before = memory.clone()
        with monkeypatch.context() as m:
            m.setenv("RDFER_KERNELS", "fast")
            got = agreement(logits, labels, ids, memory, params, warm)
        assert counts == {"n": 1}
        want = agreement_reference(logits, labels, ids, memory, params, warm)
        assert_same(got, want)
        torch.testing.assert_close(memory, before, rtol=0, atol=0, equal_nan=True)
        return got, counts.options["n"][0]

    return run


# With the sizes the GPU alone used to run (4096 and 1024 samples): about a second under the interpreter.
SHAPES = [(257, k, 7 if k % 2 else 11) for k in range(1, 9)] + [(1, 4, 7), (1, 1, 11), (3, 8, 16), (5, 3, 2)]
SHAPES += [(4096, 4, 7), (1024, 3, 7), (1, 1, 16)]


@pytest.mark.usefixtures("interpret")
@pytest.mark.parametrize("device", KERNEL_DEVICES)
@pytest.mark.parametrize(("b", "k", "c"), SHAPES)
def test_kernel_matches_twin_in_one_launch(device, b, k, c, compare):
    params = AgreementParams(NOISY_WEIGHT, relabel=True, relabel_margin=0.3)
    got, options = compare(
        *random_batch(b, k, c, seed=b * 100 + k * 10 + c, device=device), params, warm=True
    )
    assert {name: options[name] for name in ("EASY", "HARD", "NOISY")} == {c.name: c for c in Category}
    if b == 257:  # the random batch reaches every category
        assert set(got.category.tolist()) == {EASY, HARD, NOISY}


@pytest.mark.usefixtures("interpret")
@pytest.mark.parametrize("device", KERNEL_DEVICES)
@pytest.mark.parametrize(("warm", "relabel", "use_ema"), list(itertools.product([False, True], repeat=3)))
def test_kernel_flags_match_twin(device, warm, relabel, use_ema, compare):
    params = AgreementParams(
        relabel=relabel,
        relabel_margin=0.3,
        use_ema=use_ema,
        a_min=0.5,
        s_max=0.3,
        noisy_weight=0.25,
        momentum=0.8,
    )
    compare(*random_batch(65, 4, 7, seed=int(warm) + 2 * relabel + 4 * use_ema, device=device), params, warm)


@pytest.mark.usefixtures("interpret")
@pytest.mark.parametrize("device", KERNEL_DEVICES)
def test_kernel_resolves_ties_as_the_twin(device, compare):
    # A 2-2 vote tie broken by the mean (the hand-worked batch), an exact tie in votes and mean (K=2, mirrored
    # clips: the lower class wins), ties inside clips (equal logits: the first maximum votes), and a sample
    # whose A equals a_min exactly.
    mirrored = torch.tensor([[[2.0, 0.0, -1.0], [0.0, 2.0, -1.0]]])
    cases = [
        (HAND, HAND_LABELS),
        (mirrored, torch.tensor([1])),
        (torch.zeros(3, 4, 5), torch.tensor([0, 1, 4])),
    ]
    for logits, labels in cases:
        n = len(labels)
        ids, memory = torch.arange(n, device=device), fresh_memory(n).to(device)
        got, _ = compare(
            logits.to(device), labels.to(device), ids, memory, AgreementParams(NOISY_WEIGHT), warm=True
        )
        if logits is mirrored:
            assert got.majority.tolist() == [0]


@pytest.mark.usefixtures("interpret")
@pytest.mark.parametrize("device", KERNEL_DEVICES)
def test_kernel_writes_every_output_element(device, monkeypatch, compare):
    def poisoned(shape, dtype, device):
        return torch.full(shape, float("nan") if dtype.is_floating_point else -7, dtype=dtype, device=device)

    monkeypatch.setattr(_launch, "empty", poisoned)
    logits, labels, ids, memory = random_batch(
        130, 5, 11, seed=3, device=device
    )  # 2 blocks, the second nearly empty
    memory.fill_(0.5)  # no NaN anywhere in the inputs: any NaN or -7 left is an unwritten element
    stats, _ = compare(logits, labels, ids, memory, AgreementParams(NOISY_WEIGHT, relabel=True), warm=True)
    for name in FIELDS:
        value = getattr(stats, name)
        assert not (value.isnan().any() if value.is_floating_point() else (value == -7).any()), name


@pytest.mark.usefixtures("interpret")
@pytest.mark.parametrize("device", KERNEL_DEVICES)
def test_kernel_accepts_strided_logits_other_dtypes_and_int32_ids(device, compare):
    logits, labels, ids, memory = random_batch(40, 4, 7, seed=5, device=device)
    compare(
        logits.transpose(0, 1).contiguous().transpose(0, 1),
        labels,
        ids,
        memory,
        AgreementParams(NOISY_WEIGHT),
        True,
    )
    for dtype in (*AGREEMENT_LOGIT_DTYPES, torch.float64):  # float64 is cast to float32 before the launch
        compare(logits.to(dtype), labels, ids, memory, AgreementParams(NOISY_WEIGHT), True)
    compare(logits, labels.int(), ids.int(), memory, AgreementParams(NOISY_WEIGHT), True)


@pytest.mark.usefixtures("interpret")
@pytest.mark.parametrize("device", KERNEL_DEVICES)
def test_dispatch_falls_back_and_reports_missing_fast_path(device, monkeypatch, count_launches):
    counts = count_launches({"n": (kernel_module, "_agreement_kernel")})
    batch = random_batch(8, 4, 7, seed=6, device=device)
    agreement(*batch, AgreementParams(NOISY_WEIGHT), True)
    assert counts["n"] == 1
    monkeypatch.setenv("RDFER_KERNELS", "reference")
    agreement(*batch, AgreementParams(NOISY_WEIGHT), True)
    wide = random_batch(8, 4, 17, seed=7, device=device)  # more classes than the kernel holds
    monkeypatch.setenv("RDFER_KERNELS", "auto")
    agreement(*wide, AgreementParams(NOISY_WEIGHT), True)  # the twin serves it
    assert counts["n"] == 1
    monkeypatch.setenv("RDFER_KERNELS", "fast")
    with pytest.raises(RuntimeError, match="agreement kernel cannot run.*1..8 clips and 1..16 classes"):
        agreement(*wide, AgreementParams(NOISY_WEIGHT), True)


@pytest.mark.usefixtures("interpret")
@pytest.mark.parametrize("device", KERNEL_DEVICES)
def test_dispatch_takes_the_twin_where_shared_memory_does_not_fit(device, monkeypatch, count_launches):
    counts = count_launches({"n": (kernel_module, "_agreement_kernel")})
    monkeypatch.setattr(_launch, "_FITS", {})
    monkeypatch.setattr(_launch, "shared_memory_limit", lambda device: 1000)
    monkeypatch.setattr(_launch, "shared_memory_needed", lambda job, device: 1001)
    batch = random_batch(8, 4, 7, seed=9, device=device)
    assert_same(
        agreement(*batch, AgreementParams(NOISY_WEIGHT), True),
        agreement_reference(*batch, AgreementParams(NOISY_WEIGHT), True),
    )
    assert counts["n"] == 0
    monkeypatch.setenv("RDFER_KERNELS", "fast")
    with pytest.raises(RuntimeError, match="needs 1001 bytes of shared memory"):
        agreement(*batch, AgreementParams(NOISY_WEIGHT), True)


def test_kernel_input_errors_are_clear():
    logits, labels, ids, memory = random_batch(4, 4, 7, seed=8, device="cpu")
    params = {**dataclasses.asdict(AgreementParams(NOISY_WEIGHT)), "warm": True}
    with pytest.raises(ValueError, match="1..8 clips and 1..16 classes"):
        kernel_module.agreement_kernel(torch.zeros(4, 9, 7), labels, ids, memory, **params)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 7\)"):
        kernel_module.agreement_kernel(logits, labels + 7, ids, memory, **params)
    with pytest.raises(ValueError, match="sample ids must be in"):
        kernel_module.agreement_kernel(logits, labels, ids + 100, memory, **params)
    with pytest.raises(ValueError, match="float32 \\[N, 2\\]"):
        kernel_module.agreement_kernel(logits, labels, ids, memory.double(), **params)
    with pytest.raises(TypeError, match="rules must be"):
        kernel_module.agreement_kernel(logits, labels, ids, memory, warm=True)


def test_configurations_cover_the_launch_rule():
    configs = kernel_module.configurations()
    assert len(configs) == len(set(configs)) == 4 * len(AGREEMENT_LOGIT_DTYPES)  # BLOCK_C 2, 4, 8, 16
    assert kernel_module.launch_config(7, torch.float64) == kernel_module.launch_config(8, torch.float32)


def test_kernel_compiles_for_sm90_without_a_gpu(compile_kernels):
    out = compile_kernels("--arch", "90", "--op", "agreement")
    assert "agreement  logits bf16 BLOCK_C 8" in out
    assert "Nothing falls back" in out
