"""The evaluation loop: video logits over every clip a loader yields, and WAR/UAR from them.

Sampling is deterministic (segment centres, no augmentation) and every clip is evaluated: no batch is
dropped. Under torchrun each rank evaluates its shard and the confusion matrices are summed.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from rdfer import runtime
from rdfer.config import RunConfig
from rdfer.data.loader import SkipReport
from rdfer.distributed import World, all_reduce_sum, gather_objects
from rdfer.metrics import confusion_matrix, summarize
from rdfer.models import RDFER


@torch.no_grad()
def predict_loader(model: RDFER, loader, device: torch.device, run: RunConfig, progress: bool = False):
    """Video logits [N, C] (float32, CPU), labels [N] and sample ids [N] of every clip the loader yields."""
    model.eval()
    logits, labels, ids, skipped = [], [], [], SkipReport()
    for batch in tqdm(loader, desc="evaluate", disable=not progress, leave=False, dynamic_ncols=True):
        skipped.add(batch)
        if batch["frames"].shape[0] == 0:
            continue
        with runtime.autocast(device, run):
            # The ids reach only the architecture experiment's clip placements (rdfer.models.placement).
            sample_ids = batch["sample_id"].to(device, non_blocking=True)
            out = model(batch["frames"].to(device, non_blocking=True), sample_ids=sample_ids)
        logits.append(out["logits"].float().cpu())
        labels.append(batch["label"])
        ids.append(batch["sample_id"])
    if not logits:
        raise RuntimeError("evaluation saw no readable clip")
    return torch.cat(logits), torch.cat(labels), torch.cat(ids), skipped


def evaluate_loader(
    model: RDFER, loader, device, run: RunConfig, classes, progress: bool = False, world: World | None = None
) -> dict:
    """Metrics over the clips the loader yields; under torchrun each rank passes its shard and the confusion
    matrices are summed, so the result equals one process evaluating every clip."""
    world = World() if world is None else world
    logits, labels, _, skipped = predict_loader(model, loader, device, run, progress)
    cm = all_reduce_sum(confusion_matrix(logits.argmax(-1), labels, len(classes)).to(device), world).cpu()
    metrics = summarize(cm, classes)
    metrics["skipped"] = gather_objects(skipped.entries, world)
    return metrics
