"""Shared helpers of the chart and packaging tests: the repository layout, the values variants and a renderer
that runs Helm's own template engine (the Helm Go SDK linked into `helm-python-sdk`, no helm binary)."""

from __future__ import annotations

import functools
import json
import os
import pathlib
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "sluice"
GOLDEN = pathlib.Path(__file__).resolve().parent / "golden"
RELEASE = "sluice"
NAMESPACE = "sluice"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest whose schemas
# kubernetes-validate ships: every rendered object must be valid for both.
KUBE_VERSIONS = ("1.30.0", "1.37.0")
UPDATE_GOLDEN = os.environ.get("SLUICE_UPDATE_GOLDEN") == "1"


def load_yaml(path: pathlib.Path) -> Any:
    """Parses one YAML document."""
    with path.open() as f:
        return yaml.safe_load(f)


def variants() -> dict[str, dict[str, Any]]:
    """The values variants every test runs over: the defaults plus each documented ci/<name>-values.yaml."""
    out: dict[str, dict[str, Any]] = {"default": {}}
    for path in sorted((CHART / "ci").glob("*-values.yaml")):
        out[path.name.removesuffix("-values.yaml")] = load_yaml(path) or {}
    return out


@dataclass(frozen=True)
class Rendered:
    """One chart rendering: the template outputs in file order and the Kubernetes objects they hold."""

    templates: dict[str, str]
    objects: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        """Every object of one kind."""
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name: str) -> dict[str, Any]:
        """The object of that kind and name; fails when there is not exactly one."""
        found = [o for o in self.of_kind(kind) if o["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
        return found[0]

    def manifest(self) -> str:
        """The rendering as `helm template` prints it: each template's objects under a `# Source:` line."""
        parts = []
        for name, text in self.templates.items():
            if name.endswith("NOTES.txt") or not text.strip():
                continue
            for doc in split_documents(text):
                parts.append(f"---\n# Source: {name}\n{doc}\n")
        return "".join(parts)


def split_documents(text: str) -> list[str]:
    """The non-empty YAML documents of a template's output, stripped."""
    docs = []
    for chunk in ("\n" + text).split("\n---"):
        chunk = chunk.strip("\n")
        if yaml.safe_load(chunk) is not None:
            docs.append(chunk)
    return docs


@functools.cache
def _chart() -> Any:
    import helm_python

    return helm_python.Chart.load(str(CHART))


def render(values: dict[str, Any] | None = None) -> Rendered:
    """Renders the chart as `helm install sluice charts/sluice -n sluice` would (values merged over the defaults)."""
    return _render_cached(json.dumps(values or {}, sort_keys=True))


@functools.cache
def _render_cached(values_json: str) -> Rendered:
    out = _chart().render(json.loads(values_json), name=RELEASE, namespace=NAMESPACE, is_install=True)
    templates = {k: out[k] for k in sorted(out)}
    objects = []
    for name, text in templates.items():
        if name.endswith("NOTES.txt"):
            continue
        for doc in split_documents(text):
            objects.append(yaml.safe_load(doc))
    return Rendered(templates, objects)


def chart() -> Any:
    """The loaded chart (shared by the tests)."""
    return _chart()


@pytest.fixture(params=sorted(variants()))
def variant(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """Each values variant: (name, values)."""
    return request.param, variants()[request.param]
