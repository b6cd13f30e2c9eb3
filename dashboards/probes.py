"""What the Fig. 7 layer-response probe measured, and which of its logged layers are 3×3 layers.

The trainer's probe (resnet_core/probes.py) takes the standard deviation of each layer's output **after BN,
before the ReLU / residual addition**, over every element of one fixed batch — the first ``run.probe_images``
images of the test set — with the net in **eval mode** (BN uses its running statistics), at every evaluation.
The paper measures on CIFAR-10 but says neither which images nor which mode; those are our choices, and the
report says so.

Fig. 7 is about 3×3 layers. Older logs hold the BN of every conv on the main path, which for the ImageNet
layout includes the 7×7 stem and the bottleneck's 1×1 layers (and any projection shortcut's BN); those are
dropped here by name. On the CIFAR layout every logged layer is a 3×3 layer (stem included).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd

from dashboards.stats import layout_column

BASIC_IMAGENET_DEPTHS = (18, 34)  # two 3×3 convs per block; deeper ImageNet nets use 1×1-3×3-1×1 bottlenecks
_BLOCK_LAYER = re.compile(r"^layer\d+\.\d+\.(?:bn|conv)(\d+)$")
_SHORTCUT = ("shortcut", "downsample")


@dataclass
class ProbeDescription:
    """What a set of layer responses is: layers, images and mode, in words, for the report."""

    layers: str  # e.g. "19 3×3 layers per 20-layer net"
    images: str  # e.g. "the first 128 images of the digits test set (a fixed batch)"
    mode: str  # eval mode, after BN, before ReLU / addition
    iteration: str  # when: "final evaluation (iteration 2,000)"
    dropped: str  # "" or which non-3×3 layers of older logs were left out


def is_3x3(layer: str, layout: str, depth: int | None) -> bool:
    """True when a logged response layer (a module path such as ``layer1.0.bn2``) follows a 3×3 conv.

    Names that match no known pattern are kept: the trainer now logs 3×3 layers only.
    """
    if any(part in layer.split(".") for part in _SHORTCUT):
        return False
    if "." not in layer:  # the stem: 3×3 on the CIFAR layout, 7×7 on the ImageNet layout
        return layout != "imagenet"
    match = _BLOCK_LAYER.match(layer)
    if match is None or layout != "imagenet" or depth is None or int(depth) in BASIC_IMAGENET_DEPTHS:
        return True
    return match.group(1) == "2"  # a bottleneck's middle conv is its only 3×3


def three_by_three(responses: pd.DataFrame, runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split responses into (3×3 layers, the rest); the kept rows are renumbered 0.. in network order per run."""
    if responses.empty:
        return responses, responses
    info = runs.assign(layout=layout_column(runs))[["run_id", "layout", "depth"]]
    rows = responses.merge(info, on="run_id", how="left")
    keep = [is_3x3(layer, layout, None if pd.isna(depth) else depth)
            for layer, layout, depth in zip(rows["layer"], rows["layout"].fillna("cifar"), rows["depth"])]
    keep = pd.Series(keep, index=responses.index)
    kept = responses[keep].sort_values(["run_id", "layer_index"]).copy()
    kept["layer_index"] = kept.groupby("run_id").cumcount()
    return kept.reset_index(drop=True), responses[~keep].reset_index(drop=True)


def describe_probe(responses: pd.DataFrame, dropped: pd.DataFrame, runs: pd.DataFrame) -> ProbeDescription:
    """The probe's layers, images, mode and iteration, in words, from the kept and dropped responses."""
    members = runs[runs["run_id"].isin(responses["run_id"])]
    counts = responses.groupby("run_id").size()
    per_depth = (members.assign(layers=members["run_id"].map(counts)).dropna(subset=["depth"])
                 .groupby("depth")["layers"].agg(lambda s: sorted(set(int(v) for v in s))))
    layers = "; ".join(f"{'/'.join(map(str, n))} per {int(d)}-layer net" for d, n in per_depth.items())
    images_column = "params.run.probe_images"
    sizes = sorted({int(v) for v in pd.to_numeric(members.get(images_column, pd.Series(dtype=float)),
                                                 errors="coerce").dropna()})
    datasets = sorted(set(members["dataset"].dropna())) if "dataset" in members else []
    first = f"the first {' or '.join(map(str, sizes))}" if sizes else "the first run.probe_images (not logged)"
    images = f"{first} images of the {' / '.join(datasets) or 'unnamed'} test set — one fixed batch, the same " \
             f"at every evaluation"
    iterations = sorted(set(int(i) for i in responses["iteration"]))
    when = ""
    if iterations:
        when = (f"final evaluation (iteration {iterations[0]:,})" if len(iterations) == 1
                else f"each run's final evaluation (iterations {iterations[0]:,}–{iterations[-1]:,})")
    dropped_text = ""
    if not dropped.empty:
        names = sorted(set(dropped["layer"]))
        shown = ", ".join(names[:6]) + (", …" if len(names) > 6 else "")
        dropped_text = (f"{len(dropped)} logged response(s) of non-3×3 layers ({shown}) from "
                        f"{dropped['run_id'].nunique()} run(s) are left out: Fig. 7 is about 3×3 layers.")
    mode = ("standard deviation over every element of the batch of each 3×3 conv layer's output after its BN and "
            "before the ReLU / residual addition, with the net in eval mode (BN uses its running statistics)")
    return ProbeDescription(f"{layers} (3×3 layers only, in network order)" if layers else "none", images, mode,
                            when, dropped_text)
