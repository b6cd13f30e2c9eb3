"""Tests for resnet_core.models: the paper's parameter counts, plain/residual twins, shortcuts, shapes,
gradients, validation, pickling, init and the Fig. 7 response layers. Runs on CPU in well under a minute."""

from __future__ import annotations

import pickle
from collections.abc import Callable

import pytest
import torch
import torchvision
from torch import nn

from resnet_core.config import IMAGENET_DEPTHS, ModelConfig, TrainConfig, validate
from resnet_core.models import (
    IMAGENET_LAYERS,
    BasicBlock,
    Bottleneck,
    IdentityShortcut,
    PadShortcut,
    ProjectionShortcut,
    build_model,
    count_parameters,
    response_layers,
)

CIFAR_DEPTHS = (20, 32, 44, 56)
SHORTCUTS = ("A", "B", "C")


def shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


def count(model: nn.Module, kind: type[nn.Module]) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


# ---------------------------------------------------------------------------------------------- counts


@pytest.mark.parametrize(
    ("depth", "millions", "digits"),
    [(20, 0.27, 2), (32, 0.46, 2), (44, 0.66, 2), (56, 0.85, 2), (110, 1.7, 1), (1202, 19.4, 1)],
)
def test_cifar_parameter_counts_match_table_6(depth: int, millions: float, digits: int) -> None:
    model = build_model("cifar", depth)  # option A, the paper's CIFAR choice
    assert round(count_parameters(model) / 1e6, digits) == millions


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_imagenet_option_b_matches_torchvision(depth: int) -> None:
    ours = build_model("imagenet", depth, num_classes=1000)  # shortcut None -> "B"
    theirs = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    assert count_parameters(ours) == count_parameters(theirs)


TWINS = [("cifar", d) for d in (*CIFAR_DEPTHS, 110)] + [("imagenet", d) for d in (18, 34, 50)]


@pytest.mark.parametrize(("layout", "depth"), TWINS)
def test_plain_twin_has_identical_parameters_to_option_a(layout: str, depth: int) -> None:
    plain = build_model(layout, depth, residual=False)
    resnet = build_model(layout, depth, residual=True, shortcut="A")
    assert shapes(plain) == shapes(resnet)
    assert count_parameters(plain) == count_parameters(resnet)
    assert count(plain, PadShortcut) == count(plain, IdentityShortcut) == 0
    assert count(resnet, PadShortcut) > 0 and count(resnet, ProjectionShortcut) == 0


@pytest.mark.parametrize(
    ("layout", "depth", "blocks", "reshaping"),
    [("cifar", 20, 9, 2), ("cifar", 56, 27, 2), ("imagenet", 18, 8, 3), ("imagenet", 50, 16, 4)],
)
def test_shortcut_options_add_parameters_where_expected(layout: str, depth: int, blocks: int, reshaping: int) -> None:
    plain = count_parameters(build_model(layout, depth, residual=False))
    a, b, c = (build_model(layout, depth, shortcut=s) for s in SHORTCUTS)
    assert count_parameters(a) == plain
    assert count(a, ProjectionShortcut) == 0 and count(a, PadShortcut) == reshaping
    assert count(a, IdentityShortcut) == blocks - reshaping
    # B: projections exactly where the shape changes, identity elsewhere.
    assert count(b, ProjectionShortcut) == reshaping and count(b, IdentityShortcut) == blocks - reshaping
    assert count(b, PadShortcut) == 0
    extra_b = count_parameters(b) - plain
    assert extra_b == sum(count_parameters(m) for m in b.modules() if isinstance(m, ProjectionShortcut)) > 0
    # C: a projection on every block.
    assert count(c, ProjectionShortcut) == blocks and count(c, IdentityShortcut) + count(c, PadShortcut) == 0
    assert count_parameters(c) > count_parameters(b)
    # Extra parameters live only under shortcut.*; every other name and shape is the plain twin's.
    for model in (b, c):
        assert {k: v for k, v in shapes(model).items() if ".shortcut." not in k} == shapes(a)


def test_block_kinds() -> None:
    assert count(build_model("imagenet", 34), Bottleneck) == 0
    assert count(build_model("imagenet", 50), BasicBlock) == 0
    assert count(build_model("cifar", 20), BasicBlock) == 9


def test_width_scales_filters() -> None:
    model = build_model("cifar", 20, width=0.5)
    assert model.conv1.out_channels == 8 and model.fc.in_features == 32
    tiny = build_model("cifar", 8, width=0.01)  # rounds to at least one filter
    assert tiny.conv1.out_channels == 1
    assert tiny(torch.randn(2, 3, 8, 8)).shape == (2, 10)


# ------------------------------------------------------------------------------------ forward / backward

NETS = (("cifar", 20), ("imagenet", 18), ("imagenet", 50))
CASES = [(f, d, r, s) for f, d in NETS for r in (True, False) for s in SHORTCUTS]


@pytest.mark.parametrize(("layout", "depth", "residual", "shortcut"), CASES)
def test_output_shapes(layout: str, depth: int, residual: bool, shortcut: str) -> None:
    torch.manual_seed(0)
    model = build_model(layout, depth, residual=residual, shortcut=shortcut, num_classes=7)
    # CIFAR nets take any input of at least 8x8 (odd sizes too); ImageNet nets run at 64 and 32.
    runs = [(True, s) for s in (32, 16, 15, 8)] + [(False, 32)] if layout == "cifar" else [(True, 64), (False, 32)]
    with torch.no_grad():
        for train, size in runs:
            model.train(train)
            out = model(torch.randn(2, 3, size, size))
            assert out.shape == (2, 7)
            assert torch.isfinite(out).all()


def test_in_channels_and_dropout() -> None:
    model = build_model("cifar", 20, in_channels=1, num_classes=3, dropout=0.5)
    assert isinstance(model.dropout, nn.Dropout) and model.dropout.p == 0.5
    assert model(torch.randn(4, 1, 16, 16)).shape == (4, 3)


def _assert_all_gradients(model: nn.Module, size: int) -> None:
    torch.manual_seed(1)
    model.train()
    x = torch.randn(4, 3, size, size)
    y = torch.randint(0, 10, (4,))
    nn.functional.cross_entropy(model(x), y).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("residual", [True, False])
@pytest.mark.parametrize("shortcut", SHORTCUTS)
def test_every_parameter_gets_a_gradient_cifar(residual: bool, shortcut: str) -> None:
    torch.manual_seed(0)
    _assert_all_gradients(build_model("cifar", 20, residual=residual, shortcut=shortcut), 32)


@pytest.mark.parametrize("residual", [True, False])
def test_every_parameter_gets_a_gradient_imagenet(residual: bool) -> None:
    torch.manual_seed(0)
    _assert_all_gradients(build_model("imagenet", 18, residual=residual), 64)


def test_residual_differs_from_plain_only_by_the_addition() -> None:
    torch.manual_seed(0)
    plain = build_model("cifar", 20, residual=False).eval()
    resnet = build_model("cifar", 20, residual=True).eval()
    resnet.load_state_dict(plain.state_dict())  # identical keys
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(plain(x), resnet(x))
        block = resnet.layer2[0]
        # Option A shortcut: subsample and zero-pad channels.
        h = torch.randn(2, 16, 32, 32)
        s = block.shortcut(h)
        assert s.shape == (2, 32, 16, 16)
        assert torch.equal(s[:, :16], h[:, :, ::2, ::2]) and not s[:, 16:].any()


def test_channels_last_and_bf16_autocast() -> None:
    torch.manual_seed(0)
    model = build_model("cifar", 20).to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 32, 32).to(memory_format=torch.channels_last)
    reference = model.eval()(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.dtype == torch.bfloat16 and out.shape == (2, 10) and torch.isfinite(out.float()).all()
    assert torch.allclose(out.float(), reference, atol=0.1, rtol=0.1)
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(x).float().sum()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("residual", [True, False])
def test_traces_with_torch_compile_without_graph_breaks(residual: bool) -> None:
    # The "eager" backend checks that Dynamo captures the whole forward (fullgraph) without needing a
    # C++ compiler; Inductor code generation is exercised by the training runs.
    torch._dynamo.reset()
    model = build_model("cifar", 8, residual=residual, shortcut="A").eval()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(compiled(x), model(x))
    # The compiled wrapper is not the network: the probes take the model that was compiled (fit keeps it).
    with pytest.raises(TypeError, match="uncompiled ResNet"):
        response_layers(compiled)


# ---------------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "bad", "valid"),
    [
        ({"layout": "mnist", "depth": 20}, "'mnist'", "imagenet"),
        ({"layout": "cifar", "depth": 21}, "got 21", "20"),
        ({"layout": "cifar", "depth": 2}, "got 2", "56"),
        ({"layout": "cifar", "depth": 0}, "got 0", "110"),
        ({"layout": "imagenet", "depth": 20}, "got 20", "18"),
        ({"layout": "imagenet", "depth": 200}, "got 200", "152"),
        ({"layout": "cifar", "depth": 20, "shortcut": "D"}, "D", "A"),
        ({"layout": "cifar", "depth": 20, "shortcut": "a", "residual": False}, "'a'", "C"),
        ({"layout": "cifar", "depth": 20, "width": 0}, "got 0", "> 0"),
        ({"layout": "cifar", "depth": 20, "width": -1.5}, "got -1.5", "> 0"),
        ({"layout": "cifar", "depth": 20, "dropout": 1.0}, "got 1.0", "[0, 1)"),
        ({"layout": "cifar", "depth": 20, "dropout": -0.1}, "got -0.1", "[0, 1)"),
        ({"layout": "cifar", "depth": 20, "num_classes": 0}, "got 0", ">= 1"),
    ],
)
def test_bad_input_raises_value_error(kwargs: dict, bad: str, valid: str) -> None:
    with pytest.raises(ValueError) as info:
        build_model(**kwargs)
    message = str(info.value)
    assert bad in message and valid in message


def _rejection(call: Callable[[], object]) -> str | None:
    """The ValueError message ``call`` raises, or None where it succeeds."""
    try:
        call()
    except ValueError as exc:
        return str(exc)
    return None


@pytest.mark.parametrize("model", [
    {}, {"layout": "imagenet", "depth": 18}, {"depth": 8, "shortcut": "C", "residual": False}, {"layout": "mnist"},
    {"depth": 21}, {"depth": 20.0}, {"layout": "imagenet", "depth": 20}, {"shortcut": "D"}, {"width": 0.0},
    {"head_dropout": 1.0},
])
def test_build_model_and_config_validation_apply_the_same_architecture_rules(model: dict) -> None:
    # One set of rules (config.check_architecture): a model config is valid exactly where build_model builds it,
    # and each names the bad value in its own terms (config keys vs build_model's arguments).
    m = ModelConfig(**model)
    from_config = _rejection(lambda: validate(TrainConfig(model=m)))
    from_build = _rejection(lambda: build_model(m.layout, m.depth, residual=m.residual, shortcut=m.shortcut,
                                                width=m.width, dropout=m.head_dropout))
    assert (from_config is None) == (from_build is None), (from_config, from_build)
    if from_config is not None:
        assert "model." in from_config and "model." not in from_build


def test_the_imagenet_depths_are_the_depths_of_table_1() -> None:
    assert tuple(IMAGENET_LAYERS) == IMAGENET_DEPTHS


def test_default_shortcut_is_the_papers_choice() -> None:
    assert build_model("cifar", 20).shortcut_option == "A"
    assert build_model("imagenet", 18).shortcut_option == "B"
    assert build_model("cifar", 20, residual=False).shortcut_option is None


@pytest.mark.parametrize(("layout", "depth"), [("cifar", 20), ("imagenet", 50)])
def test_plain_ignores_the_shortcut_option(layout: str, depth: int) -> None:
    nets = []
    for shortcut in (None, "A", "B", "C"):
        torch.manual_seed(0)
        nets.append(build_model(layout, depth, residual=False, shortcut=shortcut))
    reference = nets[0].state_dict()
    for net in nets[1:]:
        assert shapes(net) == shapes(nets[0])
        state = net.state_dict()
        assert state.keys() == reference.keys()
        assert all(torch.equal(state[k], reference[k]) for k in reference)
        assert count(net, ProjectionShortcut) + count(net, PadShortcut) + count(net, IdentityShortcut) == 0


# ------------------------------------------------------------------------------------- pickling and init


@pytest.mark.parametrize(("residual", "shortcut"), [(True, "A"), (True, "B"), (True, "C"), (False, "A")])
def test_models_pickle(residual: bool, shortcut: str) -> None:
    torch.manual_seed(0)
    model = build_model("cifar", 20, residual=residual, shortcut=shortcut).eval()
    clone = pickle.loads(pickle.dumps(model))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), clone(x))


@pytest.mark.parametrize(("layout", "depth", "last", "blocks"), [("cifar", 20, "bn2", 9), ("imagenet", 50, "bn3", 16)])
def test_zero_init_residual_zeroes_the_last_bn_of_each_block(layout: str, depth: int, last: str, blocks: int) -> None:
    model = build_model(layout, depth, shortcut="C", zero_init_residual=True)
    zeroed = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d) and not m.weight.any()]
    assert len(zeroed) == blocks  # exactly one per block; stem and projection BNs are untouched
    for block in (m for m in model.modules() if isinstance(m, (BasicBlock, Bottleneck))):
        assert not getattr(block, last).weight.any()
        assert block.bn1.weight.eq(1).all() and block.shortcut.bn.weight.eq(1).all()


def test_zero_init_residual_is_off_by_default_and_ignored_by_plain_nets() -> None:
    # Off by default: every BN weight starts at 1.
    default = build_model("cifar", 20)
    assert all(m.weight.eq(1).all() for m in default.modules() if isinstance(m, nn.BatchNorm2d))
    # Plain nets ignore it (a zeroed block would cut the signal for good).
    plain = build_model("cifar", 20, residual=False, zero_init_residual=True)
    assert all(m.weight.eq(1).all() for m in plain.modules() if isinstance(m, nn.BatchNorm2d))


def test_he_init() -> None:
    torch.manual_seed(0)
    model = build_model("cifar", 56)
    conv = model.layer3[4].conv1  # 64 -> 64, 3x3: He fan_out std = sqrt(2 / (64 * 9))
    assert abs(conv.weight.std().item() - (2 / (64 * 9)) ** 0.5) < 0.005


# ----------------------------------------------------------------------------------------- response layers


def test_response_layers_cifar20() -> None:
    layers = response_layers(build_model("cifar", 20))
    names = [name for name, _ in layers]
    assert len(layers) == 19  # stem + 18 3x3 convs
    assert len(set(names)) == len(names)
    assert names[:4] == ["bn1", "layer1.0.bn1", "layer1.0.bn2", "layer1.1.bn1"]
    assert names[-1] == "layer3.2.bn2"
    assert all(isinstance(m, nn.BatchNorm2d) for _, m in layers)


@pytest.mark.parametrize(
    ("layout", "depth", "expected"),
    # CIFAR: every conv is 3×3 (depth - 1: all but the fc layer). ImageNet: two 3×3 per basic block, one per
    # bottleneck; the 7×7 stem and the 1×1 convs are not 3×3 layers.
    [("cifar", 56, 55), ("cifar", 110, 109), ("imagenet", 18, 16), ("imagenet", 34, 32), ("imagenet", 50, 16)],
)
def test_response_layers_same_for_twins_and_options(layout: str, depth: int, expected: int) -> None:
    reference = [n for n, _ in response_layers(build_model(layout, depth, residual=False))]
    assert len(reference) == expected
    for shortcut in SHORTCUTS:  # projection-shortcut BNs are never included
        assert [n for n, _ in response_layers(build_model(layout, depth, shortcut=shortcut))] == reference


@pytest.mark.parametrize(("layout", "depth", "shortcut"), [
    ("cifar", 20, "B"), ("cifar", 20, "C"), ("imagenet", 18, "C"), ("imagenet", 50, "B"), ("imagenet", 50, "C"),
])
def test_response_layers_are_the_3x3_layers_only(layout: str, depth: int, shortcut: str) -> None:
    # Which conv feeds each response BN, read from the forward pass itself (a BN runs right after its conv),
    # not from module names.
    model = build_model(layout, depth, shortcut=shortcut).eval()
    layers = response_layers(model)
    last_conv: list[nn.Conv2d] = []
    feeding: dict[str, nn.Conv2d] = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out: last_conv.append(mod))
             for m in model.modules() if isinstance(m, nn.Conv2d)]
    hooks += [bn.register_forward_hook(lambda mod, inp, out, n=n: feeding.__setitem__(n, last_conv[-1]))
              for n, bn in layers]
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    for h in hooks:
        h.remove()
    assert [name for name, _ in layers] == list(feeding)  # network order
    assert all(conv.kernel_size == (3, 3) for conv in feeding.values())
    # ... and every 3×3 conv is in the series, once: no 7×7 stem, 1×1 bottleneck conv or projection shortcut.
    all_3x3 = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert sorted(map(id, feeding.values())) == sorted(map(id, all_3x3))
    assert count(model, ProjectionShortcut) > 0 and not any("shortcut" in name for name, _ in layers)


def test_response_layer_hooks_see_bn_output_before_relu() -> None:
    torch.manual_seed(0)
    model = build_model("cifar", 20).eval()
    seen: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, n=n: seen.__setitem__(n, out)) for n, m in response_layers(model)]
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert len(seen) == 19
    # Pre-ReLU responses keep their negative values (nothing in-place overwrote them).
    assert all((out < 0).any() for out in seen.values())
