import math
import warnings

import pytest
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score
from sklearn.metrics import confusion_matrix as sk_confusion

from rdfer.metrics import auroc, confusion_matrix, summarize


@pytest.mark.parametrize("seed, n, c", [(0, 1, 7), (1, 50, 7), (2, 1000, 11), (3, 13, 3)])
def test_war_uar_and_confusion_agree_with_scikit_learn(seed, n, c):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, c, (n,), generator=g)
    p = torch.where(torch.rand(n, generator=g) < 0.5, y, torch.randint(0, c, (n,), generator=g))
    cm = confusion_matrix(p, y, c)
    m = summarize(cm, [str(i) for i in range(c)])
    assert m["war"] == pytest.approx(accuracy_score(y, p), abs=1e-12)
    with warnings.catch_warnings():  # scikit-learn warns when p has classes that y lacks
        warnings.simplefilter("ignore")
        expected = balanced_accuracy_score(y, p)
    assert m["uar"] == pytest.approx(expected, abs=1e-12)
    assert cm.tolist() == sk_confusion(y, p, labels=list(range(c))).tolist()
    assert m["num_clips"] == n


def test_class_without_true_samples_is_left_out_of_uar():
    y = torch.tensor([0, 0, 1, 1])
    p = torch.tensor([0, 2, 1, 1])
    m = summarize(confusion_matrix(p, y, 3), ["a", "b", "c"])
    assert m["per_class_recall"] == {"a": 0.5, "b": 1.0, "c": None}
    assert m["uar"] == pytest.approx(0.75) and m["war"] == pytest.approx(0.75)


@pytest.mark.parametrize("levels", [3, 50, 10_000])  # few levels: many ties, which count one half
def test_auroc_matches_scikit_learn(levels):
    g = torch.Generator().manual_seed(levels)
    for _ in range(5):
        positive = torch.rand(300, generator=g) < 0.3
        scores = torch.randint(0, levels, (300,), generator=g).float() + positive.float() * levels / 4
        assert auroc(scores, positive) == pytest.approx(
            roc_auc_score(positive.numpy(), scores.numpy()), abs=1e-12
        )


def test_auroc_limits():
    positive = torch.tensor([True, True, False, False])
    assert auroc(torch.tensor([0.9, 0.8, 0.1, 0.2]), positive) == 1.0
    assert auroc(torch.tensor([0.1, 0.2, 0.9, 0.8]), positive) == 0.0
    assert auroc(torch.ones(4), positive) == 0.5
    assert math.isnan(auroc(torch.rand(4), torch.ones(4, dtype=torch.bool)))
