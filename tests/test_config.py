"""The config parser on real YAML files in tmp_path: values, defaults, every error's file:line."""

import dataclasses
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path, PurePosixPath

import pytest
from PIL import Image

from daemon.config import (
    VGG19_LAYERS,
    Config,
    ConfigErrors,
    Preset,
    PresetsConfig,
    Routing,
    RoutingRule,
    StyleImage,
    load_config,
    load_presets,
    parse_preset,
)
from daemon.engine.settings import FULL_SIZE, StyleSettings
from daemon.errors import ConfigError, ExitCode

REPO = Path(__file__).resolve().parents[1]

# A daemon-ready config; presets come last so that a test can append preset keys at line 9.
BASE = """\
inbox: in
outbox: out
state_dir: state
routing:
  default_preset: swirl
presets:
  swirl:
    style: style.png
"""
NEXT_LINE = 9


def _style(
    folder: Path, name: str = "style.png", colour: tuple[int, int, int] = (200, 40, 40)
) -> Path:
    """A small real PNG to use as a style image."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)
    return path


def _config_file(folder: Path, text: str, name: str = "config.yaml") -> Path:
    """Write a config (dedented) next to a style.png and BASE's folders, as a user would (the
    daemon never makes its roots, and the machine check refuses one missing)."""
    folder.mkdir(parents=True, exist_ok=True)
    for root in ("in", "out", "state"):
        (folder / root).mkdir(exist_ok=True)
    if not (folder / "style.png").exists():
        _style(folder)
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _errors(path: Path, *, daemon: bool = True) -> tuple[str, ...]:
    """The problems load_config (or, with daemon=False, load_presets) reports for `path`."""
    with pytest.raises(ConfigErrors) as raised:
        (load_config if daemon else load_presets)(path)
    assert str(raised.value) == "\n".join(raised.value.errors)
    return raised.value.errors


def _only_error(path: Path, *, daemon: bool = True) -> str:
    """The single problem reported for `path`."""
    errors = _errors(path, daemon=daemon)
    assert len(errors) == 1, errors
    return errors[0]


def _line(text: str, fragment: str) -> int:
    """1-based line of the one line of `text` containing `fragment`."""
    lines = [n for n, line in enumerate(textwrap.dedent(text).splitlines(), 1) if fragment in line]
    assert len(lines) == 1, (fragment, lines)
    return lines[0]


# --- the shipped config ---------------------------------------------------------------------------


def test_shipped_config_loads_with_the_four_paintings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # relative paths follow the file, not the cwd
    config = load_config(REPO / "config.yaml")
    paintings = {
        "starry_night": "starry_night.jpg",
        "great_wave": "great_wave.png",
        "the_scream": "the_scream.jpg",
        "shipwreck": "shipwreck.jpg",
    }
    assert list(config.presets) == list(paintings)
    for name, painting in paintings.items():
        preset = config.presets[name]
        assert preset.settings == dataclasses.replace(StyleSettings(), size=256)
        assert preset.styles == (StyleImage(REPO / "styles" / painting, 1.0),)
    assert (config.inbox, config.outbox, config.state_dir) == (
        REPO / "data" / "inbox",
        REPO / "data" / "outbox",
        REPO / "data" / "state",
    )
    assert config.routing == Routing(default_preset="starry_night")
    assert config.output.file_mode == 0o644
    assert config.originals_dir == REPO / "data" / "outbox" / "originals"


def test_shipped_paintings_are_at_most_1024_px_and_each_has_its_source() -> None:
    readme = (REPO / "styles" / "README.md").read_text(encoding="utf-8")
    for painting in ("starry_night.jpg", "great_wave.png", "the_scream.jpg", "shipwreck.jpg"):
        with Image.open(REPO / "styles" / painting) as image:
            assert max(image.size) <= 1024, painting
        assert f"`{painting}`" in readme


def test_layer_names_match_the_model() -> None:
    from daemon.engine.vgg import LAYER_NAMES  # imports torch; config.py must not

    assert VGG19_LAYERS == LAYER_NAMES


# --- values ---------------------------------------------------------------------------------------


def test_every_engine_parameter_can_be_set(tmp_path: Path) -> None:
    weights = tmp_path / "vgg.pth"
    weights.write_bytes(b"not really weights")
    path = _config_file(
        tmp_path,
        BASE
        + """\
    alpha: 2
    beta: 1e4
    content_layers: relu3_2
    style_layers: {relu1_1: 0.5, conv2_1: 2}
    size: 256
    style_scale: 0.5
    colour: luminance
    tv_weight: 0.01
    optimizer: adam
    steps: 120
    finish: fine
    seed: 7
    init: noise
    pooling: max
    weights: vgg.pth
    single_scale: true
""",
    )
    settings = load_config(path).presets["swirl"].settings
    assert settings == StyleSettings(
        alpha=2.0,
        beta=10000.0,
        content_layers=("relu3_2",),
        style_layers=(("relu1_1", 0.5), ("conv2_1", 2.0)),
        size=256,
        style_scale=0.5,
        colour="luminance",
        tv_weight=0.01,
        optimizer="adam",
        steps=120,
        finish="fine",
        seed=7,
        init="noise",
        pooling="max",
        weights=str(weights),
        single_scale=True,
    )
    changed = {f.name for f in dataclasses.fields(StyleSettings)}
    assert all(getattr(settings, n) != getattr(StyleSettings(), n) for n in changed)


def test_size_full_is_the_photos_own_size(tmp_path: Path) -> None:
    path = _config_file(tmp_path, BASE + "    size: full\n")
    assert load_config(path).presets["swirl"].settings.size == FULL_SIZE


def test_style_layers_list_gets_equal_weights(tmp_path: Path) -> None:
    path = _config_file(tmp_path, BASE + "    style_layers: [relu1_1, relu2_1, relu3_1, relu4_1]\n")
    layers = load_config(path).presets["swirl"].settings.style_layers
    assert layers == tuple((name, 0.25) for name in ("relu1_1", "relu2_1", "relu3_1", "relu4_1"))


def test_style_list_weights_are_normalised(tmp_path: Path) -> None:
    a, b, c = (_style(tmp_path / "s", f"{n}.png") for n in "abc")
    text = """\
presets:
  blend:
    style:
      - image: s/a.png
        weight: 3
      - {image: s/b.png}
      - s/c.png
"""
    preset = load_presets(_config_file(tmp_path, text)).presets["blend"]
    assert [s.path for s in preset.styles] == [a, b, c]
    assert [s.weight for s in preset.styles] == pytest.approx([0.6, 0.2, 0.2])


def test_routing_preset_for(tmp_path: Path) -> None:
    _style(tmp_path, "glass.png")
    text = """\
inbox: in
outbox: out
state_dir: state
presets:
  swirl: {style: style.png}
  glass: {style: glass.png}
routing:
  default_preset: swirl
  rules:
    - pattern: "windows/*"
      preset: glass
    - pattern: "*.PNG"
      preset: swirl
    - pattern: "*.png"
      preset: glass
"""
    config = load_config(_config_file(tmp_path, text))
    routing, presets = config.routing, config.presets
    assert routing.rules[0] == RoutingRule(pattern="windows/*", preset="glass")

    def route(relative: str, routing: Routing = routing) -> str | None:
        return routing.preset_for(PurePosixPath(relative), presets)

    assert route("glass/holiday/a.jpg") == "glass"  # the subfolder names the preset
    assert route("Glass/a.jpg") == "glass"  # whatever its case on a case-insensitive share
    assert route("windows/Church.JPG") == "glass"  # first rule
    assert route("a.png") == "swirl"  # rules in order, case-insensitive
    assert route("a.jpg") == "swirl"  # the default
    assert route("glass") == "swirl"  # a file named like a preset is not its folder
    ignore = routing.model_copy(update={"unmatched": "ignore"})
    assert route("a.jpg", ignore) is None
    assert route("windows/a.jpg", ignore) == "glass"
    assert route("a.jpg", routing.model_copy(update={"unmatched": "quarantine"})) is None


def test_relative_paths_follow_the_config_file_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    folder = tmp_path / "etc" / "stylebox"
    text = BASE.replace("state_dir: state", "state_dir: ~/state").replace(
        "outbox: out", "outbox: ../../out"
    )
    text += "originals:\n  move_to: /srv/originals\n"
    config = load_config(_config_file(folder, text))
    assert config.path == folder / "config.yaml"
    assert config.inbox == folder / "in"
    assert config.outbox == tmp_path / "out"
    assert config.state_dir == home / "state"
    assert config.originals_dir == Path("/srv/originals")
    assert config.presets["swirl"].styles[0].path == folder / "style.png"
    assert config.quarantine_dir == tmp_path / "out" / "failed"
    assert config.log_dir == tmp_path / "out" / "logs"


def test_presets_only_file_is_enough_without_the_daemon(tmp_path: Path) -> None:
    text = "presets:\n  swirl:\n    style: style.png\n"
    path = _config_file(tmp_path, text)
    config = load_presets(path)
    assert isinstance(config, PresetsConfig) and not isinstance(config, Config)
    assert config.inbox is None and list(config.presets) == ["swirl"]
    name = str(path)
    assert _errors(path) == (  # within a line, in the order of the fields
        f"{name}:1: inbox: required: a folder path, to run the daemon",
        f"{name}:1: outbox: required: a folder path, to run the daemon",
        f"{name}:1: state_dir: required: a folder path, to run the daemon",
    )


def test_the_service_can_keep_fields_of_the_running_config(tmp_path: Path) -> None:
    # A reload keeps the folders of the running config (service.loop, dataclasses.replace).
    running = load_config(_config_file(tmp_path / "a", BASE))
    changed = load_config(_config_file(tmp_path / "b", BASE.replace("inbox: in", "inbox: new")))
    kept = dataclasses.replace(changed, inbox=running.inbox)
    assert (kept.inbox, kept.outbox) == (running.inbox, changed.outbox)
    assert isinstance(kept, Config) and kept.presets == changed.presets


@pytest.mark.parametrize(
    ("given", "mode"), [('"0644"', 0o644), ('"640"', 0o640), ("'0600'", 0o600)]
)
def test_file_mode_is_a_quoted_octal_string(tmp_path: Path, given: str, mode: int) -> None:
    path = _config_file(tmp_path, f"output:\n  file_mode: {given}\n" + BASE)
    assert load_config(path).output.file_mode == mode


def test_output_extension_and_16_bit_tiff(tmp_path: Path) -> None:
    path = _config_file(tmp_path, "output:\n  format: tiff\n  bit_depth: 16\n" + BASE)
    output = load_config(path).output
    assert (output.ext, output.bit_depth) == ("tif", 16)


def test_yaml_merge_keys_work_and_keep_their_lines(tmp_path: Path) -> None:
    text = (
        BASE
        + """\
  soft:
    <<: &base {style: style.png, alpha: lots}
"""
    )
    path = _config_file(tmp_path, text)
    assert (
        _only_error(path)
        == f"{path}:10: presets.soft.alpha: Input should be a valid number, got 'lots'"
    )


# --- fingerprint ----------------------------------------------------------------------------------


def test_fingerprint_follows_settings_and_image_bytes_not_paths(tmp_path: Path) -> None:
    first = load_config(_config_file(tmp_path / "a", BASE)).presets["swirl"]
    again = load_config(tmp_path / "a" / "config.yaml").presets["swirl"]
    assert len(first.fingerprint) == 64
    assert again.fingerprint == first.fingerprint

    shutil.copytree(tmp_path / "a", tmp_path / "moved" / "elsewhere")
    moved = load_config(tmp_path / "moved" / "elsewhere" / "config.yaml").presets["swirl"]
    assert moved.styles[0].path != first.styles[0].path
    assert moved.fingerprint == first.fingerprint

    same_value = load_config(_config_file(tmp_path / "b", BASE + "    alpha: 1.0\n"))
    assert same_value.presets["swirl"].fingerprint == first.fingerprint  # 1 and 1.0 alike
    other_value = load_config(_config_file(tmp_path / "c", BASE + "    alpha: 2\n"))
    assert other_value.presets["swirl"].fingerprint != first.fingerprint

    _style(tmp_path / "a", colour=(0, 0, 255))  # the painting itself changes
    repainted = load_config(tmp_path / "a" / "config.yaml").presets["swirl"]
    assert repainted.fingerprint != first.fingerprint


def test_fingerprint_counts_style_weights(tmp_path: Path) -> None:
    _style(tmp_path, "b.png", (0, 200, 0))

    def fingerprint(a: float, b: float) -> str:
        raw = {"style": [{"image": "style.png", "weight": a}, {"image": "b.png", "weight": b}]}
        return parse_preset("mix", raw, tmp_path).fingerprint

    _config_file(tmp_path, BASE)
    assert fingerprint(1, 1) == fingerprint(2, 2)  # normalised
    assert fingerprint(1, 1) != fingerprint(1, 2)


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "offset", "field", "message"),
    [
        ("alpha: lots", 0, "presets.swirl.alpha", "Input should be a valid number, got 'lots'"),
        ("alpha: true", 0, "presets.swirl.alpha", "a valid number, got true (a boolean)"),
        ("beta: .nan", 0, "presets.swirl.beta", "Input should be a finite number"),
        ("beta: -1", 0, "presets.swirl.beta", "greater than or equal to 0, got -1"),
        ("size: 8", 0, "presets.swirl.size", "greater than or equal to 16, got 8"),
        ("size: 512.5", 0, "presets.swirl.size", "Input should be a valid integer, got 512.5"),
        ("size: '512'", 0, "presets.swirl.size", "Input should be a valid integer, got '512'"),
        ("size: 9000", 0, "presets.swirl.size", "at most 8192 px, or full (the photo's own size)"),
        ("size: fill", 0, "presets.swirl.size", "Input should be a valid integer, got 'fill'"),
        ("retries:\n  max_attempts: true", 1, "retries.max_attempts", "got true (a boolean)"),
        ("style_scale: 0", 0, "presets.swirl.style_scale", "greater than 0, got 0"),
        ("style_scale: 4.5", 0, "presets.swirl.style_scale", "less than or equal to 4, got 4.5"),
        ("tv_weight: -0.1", 0, "presets.swirl.tv_weight", "greater than or equal to 0"),
        (
            "colour: sepia",
            0,
            "presets.swirl.colour",
            "'style', 'luminance' or 'histogram', got 'sepia'",
        ),
        ("color: style", 0, "presets.swirl.color", "unknown key; did you mean 'colour'?"),
        ("optimizer: sgd", 0, "presets.swirl.optimizer", "'lbfgs' or 'adam', got 'sgd'"),
        ("steps: 0", 0, "presets.swirl.steps", "greater than or equal to 1, got 0"),
        ("finish: fin", 0, "presets.swirl.finish", "got 'fin'; did you mean 'fine'?"),
        ("seed: -1", 0, "presets.swirl.seed", "greater than or equal to 0"),
        ("init: zeros", 0, "presets.swirl.init", "'content' or 'noise'"),
        ("pooling: min", 0, "presets.swirl.pooling", "'avg' or 'max'"),
        ("weights: vgg.pth", 0, "presets.swirl.weights", "vgg.pth: no such file"),
        ("weights: 3", 0, "presets.swirl.weights", "expected caffe, torchvision or a file path"),
        ("content_layers: []", 0, "presets.swirl.content_layers", "expected at least one layer"),
        ("content_layers: relu6_1", 0, "presets.swirl.content_layers", "not a VGG-19 layer"),
        (
            "content_layers:\n      - relu4_2\n      - conv3_5",
            2,
            "presets.swirl.content_layers[1]",
            "not a VGG-19 layer: 'conv3_5'",
        ),
        ("style_layers: [relu1_1, relu1_1]", 0, "presets.swirl.style_layers", "listed twice"),
        (
            "style_layers:\n      relu1_1: 1\n      relu1_2: 0",
            2,
            "presets.swirl.style_layers.relu1_2",
            "greater than 0, got 0",
        ),
        (
            "style_layers:\n      rel1_1: 1",
            1,
            "presets.swirl.style_layers.rel1_1",
            "not a VGG-19 layer: 'rel1_1'; did you mean 'relu1_1'?",
        ),
        ("alpha: 0\n    beta: 0", 1, "presets.swirl.beta", "cannot both be 0"),
        ("device: gpu", 0, "device", "expected auto, cpu, cuda or cuda:N, got 'gpu'"),
        ("max_input_pixels: 0", 0, "max_input_pixels", "greater than or equal to 1, got 0"),
        ("batch_size: 0", 0, "batch_size", "greater than or equal to 1, got 0"),
        ("batch_size: 2.5", 0, "batch_size", "2.5"),
        (
            "batch_size: 4\nretries:\n  max_attempts: 1",
            0,
            "batch_size",
            "4 needs retries.max_attempts of 2 or more",
        ),
        ("watch:\n  mode: inotify", 1, "watch.mode", "'auto', 'native' or 'poll', got 'inotify'"),
        ("watch:\n  settle_seconds: 0", 1, "watch.settle_seconds", "greater than 0, got 0"),
        ("watch:\n  poll_interval_seconds: no", 1, "watch.poll_interval_seconds", "got false"),
        (
            "watch:\n  rescan_interval_seconds: -5",
            1,
            "watch.rescan_interval_seconds",
            "greater than 0, got -5",
        ),
        ("output:\n  quality: 101", 1, "output.quality", "less than or equal to 100, got 101"),
        ("output:\n  format: gif", 1, "output.format", "'avif' or 'heic', got 'gif'"),
        ("output:\n  bit_depth: 12", 1, "output.bit_depth", "Input should be 8 or 16, got 12"),
        ("output:\n  bit_depth: 16", 1, "output.bit_depth", "16 bits need format tiff"),
        ("output:\n  file_mode: 644", 1, "output.file_mode", "got the number 644; quote the"),
        ("output:\n  file_mode: 0644", 1, "output.file_mode", "got the number 420"),
        ("output:\n  file_mode: '0999'", 1, "output.file_mode", "expected an octal mode"),
        ("output:\n  name_pattern: '{name}'", 1, "output.name_pattern", "unknown field {name}"),
        ("output:\n  name_pattern: 'a/{stem}'", 1, "output.name_pattern", "a name, not a path"),
        (
            "originals:\n  policy: trash",
            1,
            "originals.policy",
            "'keep', 'move' or 'delete', got 'trash'",
        ),
        (
            "retries:\n  max_attempts: 0",
            1,
            "retries.max_attempts",
            "greater than or equal to 1, got 0",
        ),
        ("retries:\n  backoff_seconds: soon", 1, "retries.backoff_seconds", "got 'soon'"),
        ("logging:\n  level: verbose", 1, "logging.level", "'TRACE', 'DEBUG', 'INFO'"),
        ("logging:\n  file: 'yes'", 1, "logging.file", "a valid boolean, got 'yes'"),
        ("logging:\n  retention: 0", 1, "logging.retention", "greater than or equal to 1, got 0"),
        ("logging:\n  rotation: ''", 1, "logging.rotation", "expected text, got ''"),
        ("logging:\n  rotation: '  '", 1, "logging.rotation", "expected text, got '  '"),
        ("watch:\n  mode: pol", 1, "watch.mode", "got 'pol'; did you mean 'poll'?"),
        ("inbx: in", 0, "inbx", "unknown key; did you mean 'inbox'?"),
        ("watch:\n  settle: 2", 1, "watch.settle", "unknown key; did you mean 'settle_seconds'?"),
        ("frobnicate: 1", 0, "frobnicate", "unknown key"),
        # A key in the wrong section is sent home.
        ("default_preset: swirl", 0, "default_preset", "did you mean 'routing.default_preset'?"),
        ("settle_seconds: 1", 0, "settle_seconds", "did you mean 'watch.settle_seconds'?"),
        ("quality: 90", 0, "quality", "unknown key; did you mean 'output.quality'?"),
        ("beta: 1e4", 0, "beta", "unknown key; did you mean 'presets.<name>.beta'?"),
        ("inbox: in", 0, "presets.swirl.inbox", "unknown key; did you mean 'inbox'?"),
        ("path: elsewhere.yaml", 0, "path", "unknown key"),
        ("watch: 5", 0, "watch", "expected a mapping of keys, got 5"),
    ],
)
def test_each_problem_names_file_line_and_field(
    tmp_path: Path, extra: str, offset: int, field: str, message: str
) -> None:
    # BASE ends inside presets.swirl: preset keys are indented to land there, the others not.
    indent = "    " if field.startswith("presets.") else ""
    path = _config_file(tmp_path, BASE + indent + extra + "\n")
    error = _only_error(path)
    assert error.startswith(f"{path}:{NEXT_LINE + offset}: {field}: "), error
    assert message in error


def test_lowercase_log_level_is_accepted(tmp_path: Path) -> None:
    path = _config_file(tmp_path, BASE + "logging:\n  level: debug\n")
    assert load_config(path).logging.level == "DEBUG"


def test_unknown_key_far_from_any_has_no_suggestion(tmp_path: Path) -> None:
    path = _config_file(tmp_path, BASE + "frobnicate: 1\n")
    assert _only_error(path) == f"{path}:9: frobnicate: unknown key"


def test_several_errors_are_reported_at_once_sorted_by_line(tmp_path: Path) -> None:
    text = """\
presets:
  swirl:
    style: style.png
    size: huge
    colour: sepia
outbox: out
watch:
  mode: inotify
output:
  quality: 0
inbox: in
"""
    path = _config_file(tmp_path, text)
    errors = _errors(path)
    assert [e.split(": ", 2)[:2] for e in errors] == [
        [f"{path}:1", "state_dir"],
        [f"{path}:4", "presets.swirl.size"],
        [f"{path}:5", "presets.swirl.colour"],
        [f"{path}:8", "watch.mode"],
        [f"{path}:10", "output.quality"],
    ]


def test_style_problems(tmp_path: Path) -> None:
    text = """\
presets:
  missing:
    style: nope.png
  folder:
    style: styles
  weightless:
    style:
      - image: style.png
        weight: 0
      - {weight: 1}
  nothing:
    alpha: 1
  empty:
    style: []
"""
    (tmp_path / "styles").mkdir()
    path = _config_file(tmp_path, text)
    errors = _errors(path, daemon=False)
    assert errors == (
        f"{path}:3: presets.missing.style: {tmp_path / 'nope.png'}: no such file",
        f"{path}:5: presets.folder.style: {tmp_path / 'styles'}: not a file",
        f"{path}:9: presets.weightless.style[0].weight: Input should be greater than 0, got 0",
        f"{path}:10: presets.weightless.style[1].image: required: the style image's path",
        f"{path}:11: presets.nothing.style: required: a style image path, or a list of "
        "{image: path, weight: number}",
        f"{path}:14: presets.empty.style: expected an image path or a list of "
        "{image: path, weight: number}",
    )


def test_preset_names_must_be_safe_distinct_folder_names(tmp_path: Path) -> None:
    text = """\
presets:
  swirl: {style: style.png}
  Swirl: {style: style.png}
  Failed: {style: style.png}
  logs: {style: style.png}
  my preset: {style: style.png}
  .hidden: {style: style.png}
  42: {style: style.png}
"""
    path = _config_file(tmp_path, text)
    errors = _errors(path, daemon=False)
    assert [e.split(": ", 2)[:2] for e in errors] == [
        [f"{path}:3", "presets.Swirl"],
        [f"{path}:4", "presets.Failed"],
        [f"{path}:5", "presets.logs"],
        [f"{path}:6", "presets.my preset"],
        [f"{path}:7", "presets..hidden"],
        [f"{path}:8", "presets.42"],
    ]
    assert "only in case" in errors[0] and "reserved" in errors[1]


def test_at_least_one_preset(tmp_path: Path) -> None:
    path = _config_file(tmp_path, "presets: {}\n")
    assert _only_error(path, daemon=False) == f"{path}:1: presets: at least one preset is needed"
    empty = _config_file(tmp_path, "", name="empty.yaml")
    assert _only_error(empty, daemon=False) == f"{empty}:1: presets: required: at least one preset"
    listed = _config_file(tmp_path, "- a\n- b\n", name="list.yaml")
    assert (
        _only_error(listed, daemon=False) == f"{listed}:1: expected a mapping of keys, got a list"
    )


def test_routing_problems(tmp_path: Path) -> None:
    text = """\
inbox: in
outbox: out
state_dir: state
presets:
  swirl: {style: style.png}
routing:
  default_preset: swril
  unmatched: drop
  rules:
    - pattern: "*.png"
      preset: glass
    - {pattern: "/abs/*", preset: swirl}
    - {preset: swirl}
"""
    path = _config_file(tmp_path, text)
    assert _errors(path) == (
        f"{path}:7: routing.default_preset: no preset named 'swril'; did you mean 'swirl'?",
        f"{path}:8: routing.unmatched: Input should be 'default', 'ignore' or 'quarantine', "
        "got 'drop'",
        f"{path}:11: routing.rules[0].preset: no preset named 'glass'",
        f"{path}:12: routing.rules[1].pattern: patterns match the path relative to the inbox: "
        "drop the leading '/'",
        f"{path}:13: routing.rules[2].pattern: required: a glob on the path relative to the "
        "inbox, e.g. '*.png'",
    )


def test_unmatched_ignore_needs_no_default(tmp_path: Path) -> None:
    text = BASE.replace("  default_preset: swirl", "  unmatched: ignore")
    routing = load_config(_config_file(tmp_path, text)).routing
    assert routing == Routing(unmatched="ignore")


def test_the_only_preset_takes_every_photo_without_routing(tmp_path: Path) -> None:
    """Issue 23: a config with one preset and no `routing:` was refused, asking for a
    default_preset that could only be that one."""
    text = BASE.replace("routing:\n  default_preset: swirl\n", "")
    config = load_config(_config_file(tmp_path, text))
    assert config.routing.default_preset == "swirl"
    assert config.routing.preset_for(PurePosixPath("holiday/IMG_1.jpg"), config.presets) == "swirl"
    two = text + "  glass:\n    style: style.png\n"
    path = _config_file(tmp_path / "two", two)
    assert _only_error(path) == (
        f"{path}:1: routing.default_preset: required while routing.unmatched is 'default', "
        "unless there is only one preset (or set unmatched to ignore or quarantine)"
    )
    ignoring = text + "routing:\n  unmatched: ignore\n"
    assert load_config(_config_file(tmp_path / "ignore", ignoring)).routing == Routing(
        unmatched="ignore"
    )


@pytest.mark.parametrize(
    ("folders", "field", "other"),
    [
        ({"inbox": "data", "outbox": "data"}, "outbox", "the same folder as inbox"),
        ({"inbox": "data", "outbox": "data/out"}, "outbox", "inside inbox"),
        ({"inbox": "out/in", "outbox": "out"}, "inbox", "inside outbox"),
        ({"inbox": "in", "state_dir": "in/.state"}, "state_dir", "inside inbox"),
        ({"inbox": "in", "state_dir": "./in"}, "state_dir", "inside inbox"),
        ({"inbox": "in", "move_to": "in/done"}, "originals.move_to", "inside inbox"),
    ],
)
def test_looping_layouts_are_refused(
    tmp_path: Path, folders: dict[str, str], field: str, other: str
) -> None:
    layout = {"inbox": "in", "outbox": "out", "state_dir": "state", "move_to": "originals"}
    layout |= folders
    text = f"""\
inbox: {layout["inbox"]}
outbox: {layout["outbox"]}
state_dir: {layout["state_dir"]}
originals:
  move_to: {layout["move_to"]}
routing:""" + BASE.split("routing:", 1)[1]
    path = _config_file(tmp_path, text)
    line = {"inbox": 1, "outbox": 2, "state_dir": 3, "originals.move_to": 5}[field]
    error = _only_error(path)
    assert error.startswith(f"{path}:{line}: {field}: {other} ("), error


def test_a_looping_layout_is_reported_with_the_other_problems(tmp_path: Path) -> None:
    text = BASE.replace("outbox: out", "outbox: in/out") + "watch:\n  mode: pol\n"
    path = _config_file(tmp_path, text)
    assert [e.split(": ", 2)[:2] for e in _errors(path)] == [
        [f"{path}:2", "outbox"],
        [f"{path}:10", "watch.mode"],
    ]


def test_sections_left_with_every_key_commented_out_take_their_defaults(tmp_path: Path) -> None:
    text = BASE + "watch:\n  # mode: poll\noutput:\nretries:\nlogging:\noriginals:\n"
    config = load_config(_config_file(tmp_path, text))
    assert config.watch.mode == "auto" and config.output.quality == 92
    assert (config.retries.max_attempts, config.logging.level) == (3, "INFO")
    bare = _config_file(tmp_path / "bare", "presets:\n  swirl: {style: style.png}\nrouting:\n")
    assert load_presets(bare).routing == Routing()


def test_originals_inside_inbox_is_fine_when_not_moving(tmp_path: Path) -> None:
    text = BASE + "originals:\n  policy: keep\n  move_to: in/done\n"
    assert load_config(_config_file(tmp_path, text)).originals.policy == "keep"


def test_yaml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    path = _config_file(tmp_path, BASE + "    alpha: beta: 1\n")
    error = _only_error(path)
    assert error.startswith(f"{path}:9:16: invalid YAML: mapping values are not allowed here")


def test_duplicate_key_is_a_syntax_error(tmp_path: Path) -> None:
    path = _config_file(tmp_path, BASE + "    style: other.png\n")
    error = _only_error(path)
    assert error.startswith(
        f"{path}:9:5: invalid YAML: duplicate key 'style' (first given on line 8)"
    )


def test_python_tags_are_refused(tmp_path: Path) -> None:
    path = _config_file(tmp_path, BASE + "    seed: !!python/object/apply:os.getpid []\n")
    error = _only_error(path)
    assert error.startswith(f"{path}:9:11: invalid YAML: could not determine a constructor"), error


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    assert _only_error(path) == f"{path}: no such config file"


def test_config_errors_is_a_config_error_with_the_usage_exit_code() -> None:
    errors = ConfigErrors(["a.yaml:1: x: bad", "a.yaml:2: y: bad"])
    assert isinstance(errors, ConfigError)
    assert errors.exit_code == ExitCode.USAGE
    assert str(errors) == "a.yaml:1: x: bad\na.yaml:2: y: bad"


# --- what the config asks of the machine (checks.py, only when the caller asks) ------------------


def _machine_error(path: Path, environ: dict[str, str] | None = None) -> str:
    """The single problem `load_config(..., check_machine=True)` reports for `path`."""
    with pytest.raises(ConfigErrors) as raised:
        load_config(path, environ or {}, check_machine=True)
    (error,) = raised.value.errors
    return error


def test_loguru_is_asked_about_the_rotation_only_by_the_machine_check(tmp_path: Path) -> None:
    path = _config_file(tmp_path, BASE + "logging:\n  rotation: 10 parsecs\n")
    assert load_config(path).logging.rotation == "10 parsecs"  # parsing adds no log handler
    error = _machine_error(path)
    assert error.startswith(f"{path}:{NEXT_LINE + 1}: logging.rotation: "), error
    assert "not a rotation loguru reads" in error
    by_variable = _machine_error(
        _config_file(tmp_path / "env", BASE), {"STYLEBOX_LOGGING_ROTATION": "10 parsecs"}
    )
    assert by_variable.startswith("STYLEBOX_LOGGING_ROTATION (environment, over "), by_variable
    assert ": logging.rotation: not a rotation loguru reads" in by_variable


def test_secret_files_are_read_only_by_the_machine_check(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("short\n")
    (tmp_path / "secret").write_text("\n")
    text = BASE + "web:\n  token_file: token\nnotify:\n  webhooks:\n"
    text += "    - url: http://x/\n      secret_file: secret\n"
    path = _config_file(tmp_path, text)
    loaded = load_config(path)  # the files are looked up, not read
    assert loaded.web.token_file == tmp_path / "token"
    assert loaded.notify.webhooks[0].secret_file == tmp_path / "secret"
    with pytest.raises(ConfigErrors) as raised:
        load_config(path, check_machine=True)
    assert raised.value.errors == (
        f"{path}:{NEXT_LINE + 1}: web.token_file: {tmp_path / 'token'}: the token must be one word "
        "of at least 16 characters (make one with: python3 -c 'import secrets; "
        "print(secrets.token_urlsafe(32))')",
        f"{path}:{NEXT_LINE + 5}: notify.webhooks[0].secret_file: {tmp_path / 'secret'}: empty; "
        "put the shared secret in it",
    )


def test_the_machine_is_asked_once_the_file_itself_is_valid(tmp_path: Path) -> None:
    path = _config_file(tmp_path, BASE + "logging:\n  rotation: 10 parsecs\n  retention: 0\n")
    error = _machine_error(path)
    assert error.startswith(f"{path}:{NEXT_LINE + 2}: logging.retention: "), error


def test_a_painting_that_is_not_a_whole_image_is_refused_with_its_preset(tmp_path: Path) -> None:
    """Issue 23: `check` passed a painting that is not an image, and the daemon's start then
    stopped with exit code 2, no line and no preset, as if a photo were wrong."""
    (tmp_path / "notes.png").write_text("not a painting\n")
    cut = _style(tmp_path, "cut.jpg")
    Image.new("RGB", (64, 48), (10, 200, 90)).save(cut, quality=90)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    _style(tmp_path, "fine.png")
    text = (
        BASE
        + """\
  glass:
    style: notes.png
  mixed:
    style:
      - fine.png
      - image: cut.jpg
        weight: 2
"""
    )
    path = _config_file(tmp_path, text)
    assert load_config(path).presets["glass"].styles  # parsing reads no painting
    with pytest.raises(ConfigErrors) as raised:
        load_config(path, check_machine=True)
    assert raised.value.errors[0] == (
        f"{path}:{NEXT_LINE + 1}: presets.glass.style: {tmp_path / 'notes.png'}: not an image "
        "in a format this install reads (stylebox check lists them)"
    )
    assert raised.value.errors[1].startswith(
        f"{path}:{NEXT_LINE + 5}: presets.mixed.style[1].image: {cut}: cannot decode JPEG image ("
    )
    assert len(raised.value.errors) == 2


def test_a_file_where_a_folder_is_named_is_refused_with_its_line(tmp_path: Path) -> None:
    """Issue 23: `check` passed a state_dir that is a file, which the daemon's start refuses."""
    path = _config_file(tmp_path, BASE)
    (tmp_path / "state").rmdir()
    (tmp_path / "state").write_text("a file\n")
    assert _machine_error(path) == f"{path}:3: state_dir: {tmp_path / 'state'}: not a folder"


def test_a_missing_root_is_refused_asking_whether_the_share_is_mounted(tmp_path: Path) -> None:
    """Issue 23: the daemon never makes its roots; `check` says which is missing, and why."""
    path = _config_file(tmp_path, BASE)
    (tmp_path / "out").rmdir()
    assert _machine_error(path) == (
        f"{path}:2: outbox: outbox {tmp_path / 'out'} does not exist: is the share mounted? "
        "(stylebox makes folders inside it, never the outbox itself)"
    )


# --- parse_preset (a preset without a file) -------------------------------------------------------


def test_parse_preset_uses_the_same_rules(tmp_path: Path) -> None:
    _style(tmp_path)
    preset = parse_preset("quick", {"style": "style.png", "size": 128, "steps": 50}, tmp_path)
    assert isinstance(preset, Preset)
    assert preset.settings == StyleSettings(size=128, steps=50)
    assert preset.styles == (StyleImage(tmp_path / "style.png"),)
    with pytest.raises(ConfigErrors) as raised:
        parse_preset("quick", {"style": "style.png", "size": "big", "colour": "sepia"}, tmp_path)
    assert raised.value.errors == (
        "presets.quick.size: Input should be a valid integer, got 'big'",
        "presets.quick.colour: Input should be 'style', 'luminance' or 'histogram', got 'sepia'",
    )


# --- stylebox check, as a user runs it -----------------------------------------------------------


def test_check_prints_each_problem_on_its_line_and_points_misplaced_keys_home(
    tmp_path: Path,
) -> None:
    text = """\
inbox: in
outbox: out
state_dir: state
default_preset: swirl
presets:
  swirl:
    style: style.png
    size: "256"
    beta: -1
"""
    path = _config_file(tmp_path, text)
    command = [sys.executable, "-m", "daemon", "check", "--config", str(path)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == ExitCode.USAGE, result.stderr
    lines = result.stderr.strip().removeprefix("stylebox: error: ").splitlines()
    assert [line.split(": ", 2)[:2] for line in lines] == [
        [f"{path}:4", "default_preset"],
        [f"{path}:8", "presets.swirl.size"],
        [f"{path}:9", "presets.swirl.beta"],
    ]
    assert "did you mean 'routing.default_preset'?" in lines[0]
