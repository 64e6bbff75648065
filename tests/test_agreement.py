"""Cross-clip agreement (SPEC §3): hand-worked cases for the twin (rdfer.ops.agreement), then the Triton kernel
(kernels/agreement.py) against the twin. On CPU the kernel runs under the Triton interpreter."""

from __future__ import annotations

import itertools

import pytest
import torch

from rdfer.ops.agreement import EASY, HARD, NOISY, AgreementParams, agreement, agreement_reference

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
FIELDS = (
    "majority",
    "agreement",
    "support",
    "margin",
    "ema_agreement",
    "ema_support",
    "category",
    "weight",
    "target",
)


def logits_of(probs: list[list[list[float]]]) -> torch.Tensor:
    """Clip logits whose softmax is the given clip probabilities."""
    return torch.tensor(probs).log()


# Sample 0 (label 0): clip argmaxes 0, 0, 1, 1 -> a 2-2 tie; mean p = [0.4, 0.5, 0.1] -> majority 1 (larger
#   mean), A = 0.5, S = 0.4, M = 0.1 -> hard, weight 1 + (1 - 0.5) = 1.5.
# Sample 1 (label 2): argmaxes 1, 1, 1, 0 -> majority 1, A = 0.75 (= a_min: agrees); mean p = [0.25, 0.6, 0.15]
#   -> S = 0.15 < 0.2, M = 0.45 -> noisy, weight 0.1.
HAND = logits_of(
    [
        [[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1]],
        [[0.1, 0.8, 0.1], [0.2, 0.7, 0.1], [0.1, 0.6, 0.3], [0.6, 0.3, 0.1]],
    ]
)
HAND_LABELS = torch.tensor([0, 2])


def fresh_memory(n: int = 4) -> torch.Tensor:
    return torch.full((n, 2), float("nan"))


def test_twin_hand_worked_batch():
    memory = fresh_memory()
    s = agreement_reference(HAND, HAND_LABELS, torch.tensor([3, 1]), memory, AgreementParams(), warm=True)
    assert s.majority.tolist() == [1, 1]
    torch.testing.assert_close(s.agreement, torch.tensor([0.5, 0.75]))
    torch.testing.assert_close(s.support, torch.tensor([0.4, 0.15]))
    torch.testing.assert_close(s.margin, torch.tensor([0.1, 0.45]))
    assert s.category.tolist() == [HARD, NOISY]
    torch.testing.assert_close(s.weight, torch.tensor([1.5, 0.1]))
    assert s.target.tolist() == [0, 2]
    # First sight: the EMA is this batch's value, written at the sample ids; other rows stay unseen.
    torch.testing.assert_close(memory[[3, 1]], torch.tensor([[0.5, 0.4], [0.75, 0.15]]))
    assert memory[[0, 2]].isnan().all()


def test_twin_ema_update_drives_the_category():
    memory = fresh_memory()
    memory[1] = torch.tensor([0.5, 0.8])  # seen before: low agreement, high support
    s = agreement_reference(HAND, HAND_LABELS, torch.tensor([3, 1]), memory, AgreementParams(), warm=True)
    ema = [0.9 * 0.5 + 0.1 * 0.75, 0.9 * 0.8 + 0.1 * 0.15]  # [0.525, 0.735]
    torch.testing.assert_close(memory[1], torch.tensor(ema))
    torch.testing.assert_close(s.ema_agreement[1], torch.tensor(ema[0]))
    torch.testing.assert_close(s.agreement[1], torch.tensor(0.75))  # this batch's A is still reported
    assert s.category[1] == HARD  # the EMA's A = 0.525 < 0.75
    torch.testing.assert_close(s.weight[1], torch.tensor(1 + (1 - ema[0])))
    # Without the EMA the same sample is noisy again.
    memory[1] = torch.tensor([0.5, 0.8])
    plain = agreement_reference(
        HAND, HAND_LABELS, torch.tensor([3, 1]), memory, AgreementParams(use_ema=False), warm=True
    )
    assert plain.category[1] == NOISY


def test_twin_before_warm_up_reports_categories_with_unit_weights():
    s = agreement_reference(
        HAND,
        HAND_LABELS,
        torch.tensor([0, 1]),
        fresh_memory(),
        AgreementParams(relabel=True, relabel_margin=0.4),
        warm=False,
    )
    assert s.category.tolist() == [HARD, NOISY]
    assert s.weight.tolist() == [1.0, 1.0]
    assert s.target.tolist() == [0, 2]


def test_twin_relabel_flips_noisy_samples_with_a_clear_margin():
    params = AgreementParams(relabel=True, relabel_margin=0.4)  # M = 0.45 > 0.4
    s = agreement_reference(HAND, HAND_LABELS, torch.tensor([0, 1]), fresh_memory(), params, warm=True)
    assert s.target.tolist() == [0, 1]
    torch.testing.assert_close(s.weight, torch.tensor([1.5, 1.0]))
    kept = agreement_reference(
        HAND,
        HAND_LABELS,
        torch.tensor([0, 1]),
        fresh_memory(),
        AgreementParams(relabel=True, relabel_margin=0.5),
        warm=True,
    )  # M = 0.45
    assert kept.target.tolist() == [0, 2]
    torch.testing.assert_close(kept.weight, torch.tensor([1.5, 0.1]))


def test_twin_easy_sample_and_exact_tie_go_to_the_lower_class():
    # Sample 0: all clips vote 2 = label -> easy, weight 1. Sample 1 (K=2 would tie; here a tie inside each
    # clip): equal logits in every clip -> each clip's argmax is the first maximum, class 0.
    logits = torch.stack([logits_of([[[0.1, 0.1, 0.8]] * 4])[0], torch.zeros(4, 3)])
    s = agreement_reference(
        logits, torch.tensor([2, 1]), torch.tensor([0, 1]), fresh_memory(), AgreementParams(), warm=True
    )
    assert s.majority.tolist() == [2, 0]
    assert s.category.tolist() == [EASY, HARD]  # sample 1: A = 1 but m != y and S = 1/3 >= 0.2
    torch.testing.assert_close(s.weight, torch.tensor([1.0, 1.0 + 0.0]))


# ------------------------------------------------------------------------------------------------ kernel

triton = pytest.importorskip("triton")
from rdfer.kernels import agreement as kernel_module


def random_batch(b, k, c, seed, n_extra=7, device=DEVICE):
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
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6, equal_nan=True, msg=name)
        else:
            assert torch.equal(got, want), name


def compare(logits, labels, ids, memory, params, warm, update_memory=True):
    mem_kernel, mem_twin = memory.clone(), memory.clone()
    got = agreement(logits, labels, ids, mem_kernel, params, warm, update_memory)
    want = agreement_reference(logits, labels, ids, mem_twin, params, warm, update_memory)
    assert_same(got, want)
    torch.testing.assert_close(mem_kernel, mem_twin, rtol=1e-6, atol=1e-6, equal_nan=True)
    return got


@pytest.mark.usefixtures("interpret")
@pytest.mark.parametrize(
    ("b", "k", "c"),
    [(257, k, 7 if k % 2 else 11) for k in range(1, 9)] + [(1, 4, 7), (1, 1, 11), (3, 8, 16), (5, 3, 2)],
)
def test_kernel_matches_twin_in_one_launch(b, k, c, count_launches):
    counts = count_launches({"n": (kernel_module, "_agreement_kernel")})
    params = AgreementParams(relabel=True, relabel_margin=0.3)
    got = compare(*random_batch(b, k, c, seed=b * 100 + k * 10 + c), params, warm=True)
    assert counts["n"] == 1
    if b == 257:  # the random batch reaches every category
        assert set(got.category.tolist()) == {EASY, HARD, NOISY}


@pytest.mark.usefixtures("interpret")
@pytest.mark.parametrize(
    ("warm", "relabel", "use_ema", "update"), list(itertools.product([False, True], repeat=4))
)
def test_kernel_flags_match_twin(warm, relabel, use_ema, update):
    params = AgreementParams(
        relabel=relabel,
        relabel_margin=0.3,
        use_ema=use_ema,
        a_min=0.5,
        s_max=0.3,
        noisy_weight=0.25,
        momentum=0.8,
    )
    batch = random_batch(65, 4, 7, seed=int(warm) + 2 * relabel + 4 * use_ema + 8 * update)
    before = batch[3].clone()
    compare(*batch, params, warm, update)
    if not update:
        torch.testing.assert_close(batch[3], before, equal_nan=True)


@pytest.mark.usefixtures("interpret")
def test_kernel_resolves_ties_as_the_twin():
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
        got = compare(
            logits.to(DEVICE),
            labels.to(DEVICE),
            torch.arange(len(labels), device=DEVICE),
            fresh_memory(len(labels)).to(DEVICE),
            AgreementParams(),
            warm=True,
        )
        if logits is mirrored:
            assert got.majority.tolist() == [0]


@pytest.mark.usefixtures("interpret")
def test_kernel_writes_every_output_element(monkeypatch):
    def poisoned(shape, dtype, device):
        return torch.full(shape, float("nan") if dtype.is_floating_point else -7, dtype=dtype, device=device)

    monkeypatch.setattr(kernel_module, "_empty", poisoned)
    logits, labels, ids, memory = random_batch(130, 5, 11, seed=3)  # 2 blocks, the second nearly empty
    memory.fill_(0.5)  # no NaN anywhere in the inputs: any NaN or -7 left is an unwritten element
    stats = compare(logits, labels, ids, memory, AgreementParams(relabel=True), warm=True)
    for name in FIELDS:
        value = getattr(stats, name)
        assert not (value.isnan().any() if value.is_floating_point() else (value == -7).any()), name


@pytest.mark.usefixtures("interpret")
def test_kernel_accepts_strided_and_bf16_logits():
    logits, labels, ids, memory = random_batch(40, 4, 7, seed=5)
    compare(logits.transpose(0, 1).contiguous().transpose(0, 1), labels, ids, memory, AgreementParams(), True)
    compare(logits.bfloat16(), labels, ids, memory, AgreementParams(), True)


@pytest.mark.usefixtures("interpret")
def test_dispatch_falls_back_and_reports_missing_fast_path(monkeypatch, count_launches):
    counts = count_launches({"n": (kernel_module, "_agreement_kernel")})
    batch = random_batch(8, 4, 7, seed=6)
    agreement(*batch, AgreementParams(), True)
    assert counts["n"] == 1
    monkeypatch.setenv("RDFER_KERNELS", "reference")
    agreement(*batch, AgreementParams(), True)
    wide = random_batch(8, 4, 17, seed=7)  # more classes than the kernel holds
    monkeypatch.setenv("RDFER_KERNELS", "auto")
    agreement(*wide, AgreementParams(), True)  # the twin serves it
    assert counts["n"] == 1
    monkeypatch.setenv("RDFER_KERNELS", "fast")
    with pytest.raises(RuntimeError, match="agreement kernel cannot run"):
        agreement(*wide, AgreementParams(), True)


def test_kernel_input_errors_are_clear():
    logits, labels, ids, memory = random_batch(4, 4, 7, seed=8, device="cpu")
    common = {
        "a_min": 0.75,
        "s_max": 0.2,
        "noisy_weight": 0.1,
        "momentum": 0.9,
        "relabel": False,
        "relabel_margin": 0.5,
        "use_ema": True,
        "warm": True,
        "update_memory": True,
    }
    with pytest.raises(ValueError, match="1..8 clips and 1..16 classes"):
        kernel_module.agreement_kernel(torch.zeros(4, 9, 7), labels, ids, memory, **common)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 7\)"):
        kernel_module.agreement_kernel(logits, labels + 7, ids, memory, **common)
    with pytest.raises(ValueError, match="sample ids must be in"):
        kernel_module.agreement_kernel(logits, labels, ids + 100, memory, **common)
    with pytest.raises(ValueError, match="float32 \\[N, 2\\]"):
        kernel_module.agreement_kernel(logits, labels, ids, memory.double(), **common)


def test_kernel_compiles_for_sm90_without_a_gpu(compile_for_gpu):
    signature = {
        n: "*fp32"
        for n in (
            "logits_ptr",
            "memory_ptr",
            "agreement_ptr",
            "support_ptr",
            "margin_ptr",
            "ema_a_ptr",
            "ema_s_ptr",
            "weight_ptr",
        )
    }
    signature.update(
        {n: "*i64" for n in ("labels_ptr", "ids_ptr", "majority_ptr", "category_ptr", "target_ptr")}
    )
    signature.update(
        {
            n: "fp32"
            for n in ("a_min", "s_max", "noisy_weight", "momentum", "one_minus_momentum", "relabel_margin")
        }
    )
    constexprs = {
        "K": 4,
        "BLOCK_B": kernel_module.BLOCK_B,
        "BLOCK_C": 8,
        "WARM": True,
        "RELABEL": True,
        "USE_EMA": True,
        "UPDATE": True,
    }
    compile_for_gpu(
        [
            {
                "module": "rdfer.kernels.agreement",
                "kernel": "_agreement_kernel",
                "signature": signature,
                "constexprs": constexprs,
                "warps": 4,
                "arch": 90,
            }
        ]
    )


@pytest.mark.cuda
@pytest.mark.parametrize(("b", "k", "c"), [(4096, 4, 7), (257, 8, 11), (1, 1, 16), (1024, 3, 7)])
def test_cuda_kernel_matches_twin(b, k, c):
    compare(
        *random_batch(b, k, c, seed=b + k + c, device="cuda"),
        AgreementParams(relabel=True, relabel_margin=0.3),
        warm=True,
    )
