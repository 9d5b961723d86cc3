"""The one boundary of the tree, held by the real import graph (grimp, import-linter's engine).

The engine knows tensors and not files: it imports torch, torchvision, numpy and the standard
library, and of the daemon only itself and `daemon.errors`. Media knows Pillow and numpy. Imports
point one way: cli -> web -> cluster -> service -> jobs -> pipeline | outbox -> config -> engine |
media -> errors. A job is painted in one place, daemon/jobs (the executor), for both of its drivers.
"""

import ast
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

LAYERS = (
    "cli",
    "web",
    "cluster",
    "service",
    "jobs",
    {"pipeline", "outbox"},
    "config",
    {"engine", "media"},
    {"errors", "paths"},
)
ALLOWED_OUTSIDE = {
    "daemon.engine": {"torch", "torchvision", "numpy", "daemon.engine", "daemon.errors"},
    "daemon.media": {
        "PIL",
        "numpy",
        "pillow_heif",
        "pillow_jxl",
        "rawpy",
        "filetype",
        "daemon.media",
        "daemon.errors",
    },
    "daemon.paths": set(),
}


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("daemon", include_external_packages=True)


def _imports_beyond(
    graph: grimp.ImportGraph, package: str, allowed: set[str]
) -> dict[str, set[str]]:
    """Each module of `package` with what it imports outside the stdlib and `allowed`."""
    found: dict[str, set[str]] = {}
    for module in sorted(graph.find_descendants(package) | {package}):
        imported = {
            name
            for name in graph.find_modules_directly_imported_by(module)
            if name.split(".")[0] not in sys.stdlib_module_names
            and not any(name == a or name.startswith(a + ".") for a in allowed)
        }
        if imported:
            found[module] = imported
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED_OUTSIDE))
def test_engine_and_media_import_only_their_own_libraries(
    graph: grimp.ImportGraph, package: str
) -> None:
    assert _imports_beyond(graph, package, ALLOWED_OUTSIDE[package]) == {}


def test_the_check_sees_a_library_the_engine_may_not_use(graph: grimp.ImportGraph) -> None:
    found = _imports_beyond(graph, "daemon.service", {"daemon"})
    assert "loguru" in found["daemon.service.worker"]


def test_the_service_knows_files_not_tensors(graph: grimp.ImportGraph) -> None:
    found = _imports_beyond(
        graph, "daemon.service", {"daemon", "loguru", "watchdog", "prometheus_client", "apprise"}
    )
    assert found == {}


def test_the_web_page_knows_the_service_not_the_engine(graph: grimp.ImportGraph) -> None:
    """It reads what the service writes (and what worker hosts write in Redis); of the engine
    only its settings' defaults, which load no torch."""
    web_libraries = {"starlette", "uvicorn", "jinja2", "prometheus_client", "loguru"}
    web_libraries |= {"fastapi", "pydantic", "python_multipart"}  # the API (daemon/web/api.py)
    daemon_parts = {
        "daemon.service",
        "daemon.outbox",
        "daemon.paths",
        "daemon.config",
        "daemon.media",
        "daemon.errors",
    }
    allowed = web_libraries | daemon_parts | {"daemon.web", "daemon.engine.settings"}
    allowed |= {"daemon.cluster.status"}  # the worker hosts, as the roster in Redis shows them
    # where a running job's picture is, and how long it has left (both torch-free)
    allowed |= {"daemon.jobs.previews", "daemon.jobs.progress"}
    found = _imports_beyond(graph, "daemon.web", allowed)
    beyond = {module: names - {"daemon"} for module, names in found.items()}  # its __version__
    assert {module: names for module, names in beyond.items() if names} == {}


def test_imports_point_one_way(graph: grimp.ImportGraph) -> None:
    illegal = graph.find_illegal_dependencies_for_layers(layers=LAYERS, containers={"daemon"})
    assert {(d.importer, d.imported) for d in illegal} == set()


def test_the_config_loads_without_torch_pillow_or_numpy() -> None:
    """`stylebox check` (and a reload) read the config: it must not pay for the engine's imports."""
    code = "import sys, daemon.config; print(sorted({'torch', 'PIL', 'numpy'} & set(sys.modules)))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]"


@pytest.mark.parametrize("driver", ["daemon.service.worker", "daemon.cluster.host"])
def test_the_drivers_paint_only_through_the_executor(graph: grimp.ImportGraph, driver: str) -> None:
    """The local worker and a worker host hand jobs to daemon.jobs; neither reaches the engine
    or the pipeline itself, so a change to how a job is painted is made once."""
    imported = graph.find_modules_directly_imported_by(driver)
    beyond = {
        name
        for name in imported
        if name.split(".")[:2] in (["daemon", "engine"], ["daemon", "pipeline"])
    }
    assert beyond == set()
    assert "daemon.jobs.executor" in imported


def test_only_what_starts_a_worker_imports_it(graph: grimp.ImportGraph) -> None:
    importers = graph.find_modules_that_directly_import("daemon.service.worker")
    assert importers == {"daemon.service.loop", "daemon.cluster.serve"}


MAX_CLASS_LINES = 400
MAX_MODULE_LINES = 600


def test_no_class_or_module_in_the_daemon_is_too_big_to_read_in_a_sitting() -> None:
    """Counted by `ast`: a class from its `class` line to its last, a module by its lines."""
    too_big = []
    for path in sorted((Path(__file__).parent.parent / "daemon").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if (lines := len(text.splitlines())) > MAX_MODULE_LINES:
            too_big.append(f"{path}: {lines} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_CLASS_LINES:
                    too_big.append(f"{path}: class {node.name}, {length} lines")
    assert too_big == []
