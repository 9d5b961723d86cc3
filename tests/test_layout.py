"""The one boundary of the tree, held by the real import graph (grimp, import-linter's engine).

The engine knows tensors and not files: it imports torch, torchvision, numpy and the standard
library, and of the daemon only itself and `daemon.errors`. Media knows Pillow and numpy. Imports
point one way: cli -> web -> cluster -> service -> pipeline | outbox -> config -> engine | media
-> errors.
"""

import subprocess
import sys

import grimp
import pytest

LAYERS = (
    "cli",
    "web",
    "cluster",
    "service",
    {"pipeline", "outbox"},
    "config",
    {"engine", "media"},
    "errors",
)
ALLOWED_OUTSIDE = {
    "daemon.engine": {"torch", "torchvision", "numpy", "daemon.engine", "daemon.errors"},
    "daemon.media": {"PIL", "numpy", "daemon.media", "daemon.errors"},
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
    daemon_parts = {
        "daemon.service",
        "daemon.outbox",
        "daemon.config",
        "daemon.media",
        "daemon.errors",
    }
    allowed = web_libraries | daemon_parts | {"daemon.web", "daemon.engine.settings"}
    allowed |= {"daemon.cluster.status"}  # the worker hosts, as the roster in Redis shows them
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
