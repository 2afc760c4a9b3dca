"""The package map of docs/internals.md, enforced: who may import whom, how large a module in
streamer/ may grow, and that the declared dependencies are exactly what the code imports."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIRST_PARTY = ("schemas", "model", "streamer", "bench")
KAFKA_REDIS = ("confluent_kafka", "faust", "redis")

#: Package (module prefix) -> module prefixes it must never import (docs/internals.md).
EDGES = ("streamer.cli", "streamer.devtools", "bench")
SERVICES = ("torch", "model", "streamer.worker", "streamer.lifecycle")
DASHBOARD = "streamer.dashboard"  # a reader of the fleet's outputs: nothing below depends on it
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "schemas": ("torch", *KAFKA_REDIS, "model", "streamer", "bench"),
    "model": (*KAFKA_REDIS, "streamer", "bench"),
    "streamer.logs": ("streamer.", "bench"),
    "streamer.probes": (*SERVICES, "streamer.state", DASHBOARD, *EDGES),
    "streamer.topics": (*SERVICES, "streamer.state", DASHBOARD, *EDGES),
    "streamer.preflight": (*SERVICES, DASHBOARD, *EDGES),
    "streamer.state": (*SERVICES, "confluent_kafka", DASHBOARD, *EDGES),
    "streamer.lifecycle": ("streamer.worker", DASHBOARD, *EDGES),
    "streamer.worker": (DASHBOARD, *EDGES),
    # The dashboard reads Kafka, Redis and the registry; never the worker's hot path or torch.
    "streamer.dashboard": ("torch", "model", "streamer.worker", *EDGES),
    "streamer.devtools": ("streamer.cli", "bench"),
    # The stream evaluation runs detectors and the verdict script; never Kafka or the services.
    "streamer.evaluation": (
        "confluent_kafka",
        "streamer.worker",
        "streamer.lifecycle",
        DASHBOARD,
        *EDGES,
    ),
    "bench": ("streamer.cli",),
}
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    """Every module of the packages (scripts in data folders, without __init__.py, are not:
    bench/peer_apps/ runs in another environment)."""
    out = {}
    for package in FIRST_PARTY:
        for path in (ROOT / package).rglob("*.py"):
            if not (path.parent / "__init__.py").exists():
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def _imports(path: Path) -> list[tuple[str, bool]]:
    """Absolute names imported by a file, each with whether it is imported at module level."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(f"{node.module}.{alias.name}", id(node) in top) for alias in node.names]
    return found


def _matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix if prefix.endswith(".") else prefix + ".")


def test_packages_import_only_in_the_allowed_directions() -> None:
    broken = []
    for module, path in _modules().items():
        rules = [banned for owner, banned in FORBIDDEN.items() if _matches(module, owner)]
        for name, _ in _imports(path):
            for banned in (b for group in rules for b in group):
                if _matches(name, banned) and not _matches(name, module):
                    broken.append(f"{module} imports {name}")
    assert broken == []


def test_no_module_in_streamer_is_over_the_size_limit() -> None:
    sizes = {p: len(p.read_text().splitlines()) for p in (ROOT / "streamer").rglob("*.py")}
    assert {str(p.relative_to(ROOT)): n for p, n in sizes.items() if n > MAX_LINES} == {}


def _distribution(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_dependencies_are_exactly_what_the_code_imports() -> None:
    """Module-level imports need a runtime dependency; imports inside a function (one command
    or benchmark row) may come from an extra; every runtime dependency is used."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {_distribution(r) for r in project["dependencies"]}
    extras = {
        _distribution(r)
        for name, reqs in project["optional-dependencies"].items()
        if name != "dev"
        for r in reqs
    }
    owners = {
        module: {d.lower().replace("_", "-") for d in dists}
        for module, dists in packages_distributions().items()
    }
    used_anywhere: set[str] = set()
    problems = []
    for module, path in _modules().items():
        for name, at_top in _imports(path):
            root = name.split(".")[0]
            if root in FIRST_PARTY or root in sys.stdlib_module_names or root == "__future__":
                continue
            dists = owners.get(root)
            if not dists:
                problems.append(f"{module}: {root} belongs to no installed distribution")
                continue
            used_anywhere |= dists
            allowed = runtime if at_top else runtime | extras
            if not dists & allowed:
                problems.append(f"{module}: {root} ({', '.join(dists)}) is not declared")
    unused = runtime - used_anywhere
    assert problems == [] and unused == set()


@pytest.mark.parametrize("text", ["docs", "README.md"])
def test_user_facing_text_names_no_internal_tracker_numbers(text: str) -> None:
    paths = [ROOT / text] if text.endswith(".md") else list((ROOT / text).rglob("*.md"))
    for path in [*paths, *(ROOT / "streamer" / "cli").glob("*.py")]:
        found = re.findall(r"\bissues? #?\d+", path.read_text(), flags=re.IGNORECASE)
        assert not found, f"{path.relative_to(ROOT)}: {found}"
