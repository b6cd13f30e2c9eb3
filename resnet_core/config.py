"""Training configuration: plain dataclasses whose defaults are the paper's CIFAR-10 recipe (§4.2).

One flat dict (``"model.depth": 56``, ...) serves as Ray Tune's param space, MLflow's params and the
checkpoint's config; ``TrainConfig.to_dict`` / ``TrainConfig.from_dict`` convert both ways. All validation
lives here, in ``validate``, so every entry point (CLI, sweeps, resume) rejects bad input the same way, with a
message that names the bad value and the valid choices. Its architecture rules, ``check_architecture``, are
also the ones ``models.build_model`` applies to its arguments.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

LAYOUTS = ("cifar", "imagenet")
SHORTCUTS = ("A", "B", "C")
DATASETS = ("cifar10", "cifar100", "digits", "synthetic", "imagenet")
IMAGENET_RECIPES = ("paper", "torchvision")  # resnet_core/imagenet/transforms.py describes both
BOTTLENECK_STRIDES = ("3x3", "1x1")
SCHEDULES = ("steps", "plateau")
VERIFY_IMAGES = ("ends", "none")
# What an ImageNet-layout --data-dir holds (data.generated): none = a tree you provide (ILSVRC-2012 or class folders),
# or the name of a set the project writes itself (resnet_core/imagenet/sample.py's WRITERS).
GENERATED = ("none", "digits")
DECODES = ("workers", "device")  # where ImageNet's training JPEGs are decoded: resnet_core/imagenet/device_decode.py
PRECISIONS = ("auto", "fp32", "tf32", "bf16")
# torch.compile modes (run.compile_mode); the last two also capture CUDA graphs on a GPU.
COMPILE_MODES = ("default", "max-autotune-no-cudagraphs", "reduce-overhead", "max-autotune")
IMAGENET_DEPTHS = (18, 34, 50, 101, 152)
# The arguments ``check_architecture`` checks (by ``build_model``'s names) and the config keys holding them.
MODEL_KEYS = {"layout": "model.layout", "depth": "model.depth", "shortcut": "model.shortcut",
              "width": "model.width", "dropout": "model.head_dropout"}


def _opt(default: Any, help: str, default_help: str | None = None, choices: tuple[str, ...] | None = None) -> Any:
    """A dataclass field carrying its help text (one place documents every option; the flags read it).

    ``default_help`` describes the default where its bare value would mislead (e.g. a derived one). ``choices``:
    the field's allowed values, the same tuple ``validate`` checks, so the flag refuses anything else too.
    """
    metadata: dict[str, Any] = {"help": help}
    if default_help is not None:
        metadata["default_help"] = default_help
    if choices is not None:
        metadata["choices"] = choices
    if isinstance(default, tuple):
        return field(default_factory=lambda: default, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class ModelConfig:
    """Which network: layout, depth, plain or residual, shortcut option (§3.3), width."""

    layout: str = _opt("cifar", "network layout: cifar (the paper's §4.2 nets for 32×32 images) or imagenet (§3.4)",
                       choices=LAYOUTS)
    depth: int = _opt(20, "layers: 6n+2 for cifar (20, 32, 44, 56, 110, 1202, ...); 18/34/50/101/152 for imagenet")
    residual: bool = _opt(True, "residual net (y = F(x) + x); --no-residual / --plain gives the plain twin")
    shortcut: str = _opt("A", "shortcut option A (identity + zero-pad), B (projection where the shape changes), "
                              "C (projection everywhere); ignored by plain nets, which have no shortcuts",
                         choices=SHORTCUTS)
    width: float = _opt(1.0, "multiplies the stage widths (16/32/64 on cifar, 64..512 on imagenet)")
    zero_init_residual: bool = _opt(False, "zero-init the last BN of each block")
    head_dropout: float = _opt(0.0, "dropout before the classifier (the paper uses none)")
    bottleneck_stride: str = _opt("3x3", "which conv of a bottleneck block strides: 3x3 (torchvision's ResNet "
                                         "v1.5) or 1x1 (the first 1×1, as the paper's released Caffe models)",
                                choices=BOTTLENECK_STRIDES)


@dataclass
class DataConfig:
    """Which data set and how it is split and augmented."""

    dataset: str = _opt("cifar10", f"data set: {', '.join(DATASETS)} (digits ships with scikit-learn: works offline)",
                       choices=DATASETS)
    data_dir: str = _opt("data", "directory holding (or receiving) the CIFAR files, or holding ImageNet (train/, val/)")
    download: bool = _opt(False, "download CIFAR into --data-dir if it is missing (needs internet); with "
                                 "data.generated set, write that set there if it is missing (never ImageNet "
                                 "itself: it needs a licence)")
    generated: str = _opt("none", "imagenet only: what --data-dir holds: none (a tree you provide: ILSVRC-2012 or "
                                  "any class-folder tree) or digits (the ImageNet-layout digits set that "
                                  "python -m resnet_core.imagenet.sample writes; with --download it is written "
                                  "there when missing)", choices=GENERATED)
    val_size: int = _opt(0, "training images held out for validation (5000 = the paper's 45k/5k split); imagenet: "
                            "at most 10 % of the tree's training images or one per class, whichever is more, so a "
                            "small tree holds out less than the recipe's 10000 (the run says so)")
    augment: bool = _opt(True, "augmentation on/off (pad-4 random crop + horizontal flip; the flip only where the "
                               "data set allows it)")
    train_limit: int = _opt(0, "use only the first N training images (0 = all)")
    recipe: str = _opt("paper", "imagenet only: the input recipe, paper (shorter side random in [256, 480], "
                                "224 crop, flip, PCA lighting, mean subtracted) or torchvision (random resized "
                                "crop, flip, mean/std); tests on the centre crop of a 256 resize, and 10 crops",
                       choices=IMAGENET_RECIPES)
    crop_size: int = _opt(224, "imagenet only: the crop size; every size of the recipe scales with it "
                               "(256 and 480 for 224), so a small one is the same recipe at a lower resolution")
    verify_images: str = _opt("ends", "imagenet only: before training, check that every file is a whole JPEG "
                                      "or PNG by its first and last bytes (ends), or not (none)",
                              choices=VERIFY_IMAGES)


@dataclass
class OptimConfig:
    """SGD with a step schedule counted in iterations, plus the regularisation knobs sweeps vary."""

    lr: float = _opt(0.1, "initial learning rate")
    momentum: float = _opt(0.9, "SGD momentum")
    weight_decay: float = _opt(1e-4, "L2 weight decay")
    batch_size: int = _opt(128, "images per iteration")
    iterations: int = _opt(64_000, "training iterations")
    milestones: tuple[int, ...] = _opt((32_000, 48_000), "iterations where the lr is multiplied by --gamma",
                                       "50% and 75% of --iterations, as the paper's 32k/48k of 64k")
    gamma: float = _opt(0.1, "lr factor at each milestone")
    label_smoothing: float = _opt(0.0, "label smoothing of the cross-entropy loss")
    warmup: bool = _opt(False, "ResNet-110 rule: train at --warmup-lr until the training error falls below "
                               "--warmup-until-error, then the normal schedule")
    warmup_lr: float = _opt(0.01, "learning rate during warm-up")
    warmup_until_error: float = _opt(80.0, "training error (%) that ends warm-up")
    schedule: str = _opt("steps", "lr schedule: steps (×gamma at each milestone) or plateau (×gamma when the "
                                  "validation error, on images held out of the training set by --val-size, has "
                                  "not improved by --plateau-threshold for --plateau-patience evaluations)",
                         choices=SCHEDULES)
    plateau_patience: int = _opt(3, "plateau schedule: evaluations without improvement before the lr drops")
    plateau_threshold: float = _opt(0.5, "plateau schedule: the improvement (error points, %) that counts")


@dataclass
class RunConfig:
    """How a run executes: seed, device, precision, evaluation cadence."""

    seed: int = _opt(0, "random seed (weights, data order, augmentation, validation split)")
    device: str = _opt("auto", "auto (cuda when present, else cpu), cpu, cuda, cuda:N (the GPU of index N) or mps; "
                              "under torchrun, auto and cuda mean each process's cuda:LOCAL_RANK")
    precision: str = _opt("auto", "auto (bf16 autocast where the hardware computes bf16: Ampere or newer "
                                  "GPUs, CPUs with AVX512-BF16 or AMX; fp32 elsewhere), fp32 (IEEE: TF32 off), "
                                  "tf32 (TF32 matmuls and convolutions on CUDA; fp32 elsewhere) or bf16",
                          choices=PRECISIONS)
    deterministic: bool = _opt(False, "deterministic GPU kernels and no cuDNN autotuning, for runs that must repeat "
                                      "bit for bit on a GPU (slower; CPU runs repeat either way)")
    channels_last: bool = _opt(True, "channels-last memory format for the model and batches")
    compile: bool = _opt(False, "torch.compile the model")
    compile_mode: str = _opt("default", "torch.compile mode with --compile: " + ", ".join(COMPILE_MODES)
                                        + " (reduce-overhead and max-autotune capture CUDA graphs on a GPU)",
                             choices=COMPILE_MODES)
    eval_every: int = _opt(2000, "iterations between evaluations (the last iteration is always evaluated)")
    eval_batch_size: int = _opt(1000, "batch size for evaluation")
    probe_images: int = _opt(256, "the first N test images, one fixed batch, on which the layer responses of "
                                  "Fig. 7 are measured at each evaluation; 0 turns that probe off (gradient "
                                  "norms are always reported)")
    threads: int = _opt(0, "torch CPU threads (0 = torch's default)")
    data_workers: int = _opt(2, "imagenet only: processes decoding images (0 = in the training process); the "
                                "batches do not depend on it")
    decode: str = _opt("workers", "imagenet only: where training JPEGs are decoded: workers (on the CPU, in the "
                                  "--data-workers processes) or device (the workers only read the files and draw "
                                  "the augmentation; the training process decodes each batch with nvJPEG on a CUDA "
                                  "device, on the CPU elsewhere, and cuts the crops there; files nvJPEG cannot "
                                  "take, such as PNG or CMYK, fall back to the CPU decoder); evaluation always "
                                  "decodes in the workers", choices=DECODES)


# The paper's ImageNet recipe (§3.4) and torchvision's, as overrides of the defaults: ``imagenet_recipe``.
# Iterations are counted for the full ILSVRC-2012 (1 281 167 images: 5004 iterations per epoch at batch 256).
IMAGENET_RECIPE_OVERRIDES: dict[str, dict[str, Any]] = {
    "paper": {
        "data.dataset": "imagenet", "data.recipe": "paper", "model.layout": "imagenet", "model.depth": 34,
        "model.shortcut": "B", "model.bottleneck_stride": "1x1", "optim.batch_size": 256, "optim.lr": 0.1,
        "optim.momentum": 0.9, "optim.weight_decay": 1e-4, "optim.iterations": 600_000, "optim.milestones": [],
        # ÷10 when the error on 10 000 training images held out has not improved by 0.5 points over 3
        # evaluations of 5 000 iterations (about 3 epochs): the paper's "when the error plateaus", made explicit.
        "optim.schedule": "plateau", "optim.plateau_patience": 3, "optim.plateau_threshold": 0.5,
        "data.val_size": 10_000, "run.eval_every": 5_000, "run.eval_batch_size": 250, "run.data_workers": 8,
    },
    "torchvision": {
        "data.dataset": "imagenet", "data.recipe": "torchvision", "model.layout": "imagenet", "model.depth": 50,
        "model.shortcut": "B", "model.bottleneck_stride": "3x3", "optim.batch_size": 256, "optim.lr": 0.1,
        "optim.momentum": 0.9, "optim.weight_decay": 1e-4, "optim.iterations": 90 * 5004,
        "optim.milestones": [30 * 5004, 60 * 5004], "optim.schedule": "steps", "data.val_size": 0,
        "run.eval_every": 5004, "run.eval_batch_size": 250, "run.data_workers": 8,
    },
}


def imagenet_recipe(recipe: str) -> dict[str, Any]:
    """The flat config of a named ImageNet recipe (``paper`` or ``torchvision``), to apply overrides to."""
    check_choice("data.recipe", recipe, IMAGENET_RECIPES)
    return apply_overrides(TrainConfig().to_dict(), IMAGENET_RECIPE_OVERRIDES[recipe])


def recipe_tag(config: TrainConfig) -> str | None:
    """The ``recipe`` tag of an ImageNet run: the named recipe (``data.recipe``); None for other data sets."""
    return config.data.recipe if config.data.dataset == "imagenet" else None


def scaled_milestones(iterations: int) -> tuple[int, ...]:
    """The paper's schedule (÷10 at 50% and 75% of training) for any number of iterations."""
    return (iterations // 2, iterations * 3 // 4)


# Flat keys that older runs and checkpoints used, and their current names. "model.family" was the
# cifar/imagenet axis; "family" now means plain or residual only (``family_name``). "model.dropout" was only
# ever the dropout before the classifier.
LEGACY_KEYS = {"model.family": "model.layout", "model.dropout": "model.head_dropout"}


def current_keys(flat: dict[str, Any]) -> dict[str, Any]:
    """``flat`` with legacy keys renamed to their current names, so configs of older runs still read."""
    return {LEGACY_KEYS.get(key, key): value for key, value in flat.items()}


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    SECTIONS = ("model", "data", "optim", "run")

    def to_dict(self) -> dict[str, Any]:
        """Flat ``{"section.field": value}`` dict of plain Python values (tuples become lists)."""
        flat: dict[str, Any] = {}
        for section in self.SECTIONS:
            for f in dataclasses.fields(getattr(self, section)):
                value = getattr(getattr(self, section), f.name)
                flat[f"{section}.{f.name}"] = list(value) if isinstance(value, tuple) else value
        return flat

    @classmethod
    def from_dict(cls, flat: dict[str, Any], validate_config: bool = True) -> TrainConfig:
        """Inverse of ``to_dict``; missing keys take their defaults, legacy keys (``LEGACY_KEYS``) are read under
        their current names, unknown keys are an error."""
        flat = current_keys(flat)
        config = cls()
        known = set(config.to_dict())
        unknown = sorted(set(flat) - known)
        if unknown:
            raise ValueError(f"unknown config key(s) {unknown}; valid keys are {sorted(known)}")
        for key, value in flat.items():
            section, name = key.split(".", 1)
            target = getattr(config, section)
            setattr(target, name, _coerce(key, value, type(getattr(target, name))))
        if validate_config:
            validate(config)
        return config

    def replace(self, **flat: Any) -> TrainConfig:
        """A copy with some flat keys changed, e.g. ``cfg.replace(**{"model.depth": 56})``."""
        merged = self.to_dict()
        merged.update(flat)
        return TrainConfig.from_dict(merged)


def family_name(config: TrainConfig) -> Literal["plain", "residual"]:
    """The net's family: "residual" (y = F(x) + x) or its "plain" twin (the same layers, no shortcuts)."""
    return "residual" if config.model.residual else "plain"


def net_name(family: str, depth: int, shortcut: str = "A") -> str:
    """The one name of a net everywhere (trials, runs, the CLI, the report): ``plain-56``, ``residual-56``, or
    ``residual-34 B`` for a residual net whose shortcut option is not the CIFAR default A."""
    option = f" {shortcut}" if family == "residual" and shortcut not in ("A", "none", "") else ""
    return f"{family}-{int(depth)}{option}"


def config_net_name(config: TrainConfig) -> str:
    """``net_name`` of the net ``config`` trains."""
    return net_name(family_name(config), config.model.depth, config.model.shortcut)


def apply_overrides(flat: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A new flat dict: ``flat`` with ``overrides`` applied, legacy keys under their current names.

    The one home of the rule "iterations implies scaled milestones": overriding ``optim.iterations`` without
    ``optim.milestones`` moves the milestones to the paper's proportions of the new length
    (``scaled_milestones``), so a shorter run keeps the paper's schedule shape.
    """
    overrides = current_keys(overrides)
    merged = {**current_keys(flat), **overrides}
    if "optim.iterations" in overrides and "optim.milestones" not in overrides:
        iterations = _coerce("optim.iterations", overrides["optim.iterations"], int)
        merged["optim.milestones"] = list(scaled_milestones(iterations))
    return merged


def _coerce(key: str, value: Any, kind: type) -> Any:
    """Convert a value from a CLI string, JSON or MLflow param into the field's type."""
    try:
        if kind is tuple:
            items = value
            if isinstance(value, str):  # keep ``value`` as given, for the error message
                items = [v for v in value.replace(" ", "").strip("[]()").split(",") if v]
            return tuple(int(v) for v in items)
        if kind is bool:
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                return lowered in ("true", "1", "yes")
            return bool(value)
        if kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if kind is float:
            return float(value)
        return kind(value)
    except (TypeError, ValueError):
        expected = "comma-separated list of integers" if kind is tuple else kind.__name__
        raise ValueError(f"{key}={value!r} is not a valid {expected}") from None


def cifar_depths_hint() -> str:
    return ", ".join(str(6 * n + 2) for n in range(1, 10)) + ", …, 110, …, 1202"


def check_architecture(layout: str, depth: int, shortcut: str, width: float = 1.0, dropout: float = 0.0,
                       keys: Mapping[str, str] | None = None) -> None:
    """Raise ValueError unless the arguments describe a net of the paper: a known layout, a depth of that
    layout (an int), a shortcut option, a width > 0 and a dropout in [0, 1).

    The one home of these rules: ``validate`` checks a config's model with them, ``models.build_model`` its
    arguments. Messages name the bad value and the valid choices, calling each argument by its entry in
    ``keys`` (``validate`` passes MODEL_KEYS) or else by its name.
    """
    key = {arg: (keys or {}).get(arg, arg) for arg in MODEL_KEYS}
    check_choice(key["layout"], layout, LAYOUTS)
    check_choice(key["shortcut"], shortcut, SHORTCUTS)
    given = f"{key['depth']}={depth!r}" if keys else repr(depth)  # a config key is named along with its value
    is_int = isinstance(depth, int) and not isinstance(depth, bool)
    if layout == "cifar" and (not is_int or depth < 8 or (depth - 2) % 6):
        raise ValueError(f"CIFAR depth must be 6n+2, e.g. {cifar_depths_hint()}; got {given}")
    if layout == "imagenet" and (not is_int or depth not in IMAGENET_DEPTHS):
        raise ValueError(f"ImageNet depth must be one of {list(IMAGENET_DEPTHS)}; got {given}")
    _positive(key["width"], width)
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"{key['dropout']} must be in [0, 1); got {dropout}")


def validate(config: TrainConfig) -> None:
    """Raise ValueError naming the first bad value and the valid choices."""
    m, d, o, r = config.model, config.data, config.optim, config.run
    check_architecture(m.layout, m.depth, m.shortcut, m.width, m.head_dropout, keys=MODEL_KEYS)
    check_choice("data.dataset", d.dataset, DATASETS)
    check_choice("model.bottleneck_stride", m.bottleneck_stride, BOTTLENECK_STRIDES)
    check_choice("data.recipe", d.recipe, IMAGENET_RECIPES)
    check_choice("data.verify_images", d.verify_images, VERIFY_IMAGES)
    check_choice("data.generated", d.generated, GENERATED)
    check_choice("run.decode", r.decode, DECODES)
    check_choice("optim.schedule", o.schedule, SCHEDULES)
    if d.generated != "none" and d.dataset != "imagenet":
        raise ValueError(f"data.generated={d.generated!r} is a set in ImageNet's layout: it needs "
                         f"data.dataset='imagenet'; got {d.dataset!r}")
    if d.dataset == "imagenet" and d.download and d.generated == "none":
        raise ValueError("data.download cannot fetch ImageNet: it needs a licence (register at https://image-net.org "
                         "and download it yourself), then pass --data-dir pointing to it; only a generated set "
                         f"(data.generated: one of {list(GENERATED[1:])}) is written for you")
    if d.dataset == "imagenet" and m.layout != "imagenet":
        raise ValueError(f"data.dataset='imagenet' needs model.layout='imagenet'; got {m.layout!r}")
    if o.schedule == "plateau" and d.val_size == 0:
        raise ValueError("optim.schedule='plateau' decides on a split held out of the training set (never on "
                         "the test set): set data.val_size > 0")
    _positive("data.crop_size", d.crop_size)
    _positive("optim.plateau_patience", o.plateau_patience)
    if o.plateau_threshold < 0 or r.data_workers < 0:
        raise ValueError(f"optim.plateau_threshold and run.data_workers must be >= 0; got {o.plateau_threshold}, "
                         f"{r.data_workers}")
    if d.val_size < 0 or d.train_limit < 0:
        raise ValueError(f"data.val_size and data.train_limit must be >= 0; got {d.val_size}, {d.train_limit}")
    for name in ("lr", "batch_size", "iterations", "gamma", "warmup_lr"):
        _positive(f"optim.{name}", getattr(o, name))
    if o.weight_decay < 0 or not 0.0 <= o.momentum < 1.0:
        raise ValueError(f"optim.weight_decay must be >= 0 and optim.momentum in [0, 1); got {o.weight_decay}, {o.momentum}")
    if not 0.0 <= o.label_smoothing < 1.0:
        raise ValueError(f"optim.label_smoothing must be in [0, 1); got {o.label_smoothing}")
    if list(o.milestones) != sorted(o.milestones) or any(ms <= 0 for ms in o.milestones):
        raise ValueError(f"optim.milestones must be increasing positive iterations; got {list(o.milestones)}")
    if not 0.0 < o.warmup_until_error <= 100.0:
        raise ValueError(f"optim.warmup_until_error is a percentage in (0, 100]; got {o.warmup_until_error}")
    check_choice("run.precision", r.precision, PRECISIONS)
    check_choice("run.compile_mode", r.compile_mode, COMPILE_MODES)
    if r.compile_mode != "default" and not r.compile:
        raise ValueError(f"run.compile_mode={r.compile_mode!r} needs run.compile=true (--compile)")
    if r.device != "auto" and r.device.split(":")[0] not in ("cpu", "cuda", "mps"):
        raise ValueError(f"run.device must be 'auto', 'cpu', 'cuda[:N]' or 'mps'; got {r.device!r}")
    for name in ("eval_every", "eval_batch_size"):
        _positive(f"run.{name}", getattr(r, name))
    if r.probe_images < 0 or r.threads < 0:
        raise ValueError(f"run.probe_images and run.threads must be >= 0; got {r.probe_images}, {r.threads}")


def check_choice(key: str, value: Any, choices: tuple) -> None:
    """Raise ValueError unless ``value`` is one of ``choices``, naming ``key``, the value and the choices."""
    if value not in choices:
        raise ValueError(f"{key}={value!r} is not valid; choose one of {list(choices)}")


def _positive(key: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{key} must be > 0; got {value}")
