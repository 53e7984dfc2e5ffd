"""The chart's CRDs are the generated ones: every crds/*.yaml has a byte-identical copy in charts/sluice/crds/
and the other way round, each is a valid apiextensions.k8s.io/v1 CustomResourceDefinition, and Helm loads
exactly those files as the chart's CRDs."""

from __future__ import annotations

import pathlib

import kubernetes_validate
import pytest
import yaml

from conftest import CHART, KUBE_VERSIONS, REPO, chart

GENERATED = REPO / "crds"
COPIED = CHART / "crds"


def yaml_files(directory: pathlib.Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.glob("*.y*ml"))}


def test_chart_crds_are_the_generated_ones() -> None:
    generated, copied = yaml_files(GENERATED), yaml_files(COPIED)
    hint = "copy them again: cp crds/*.yaml charts/sluice/crds/"
    assert sorted(generated) == sorted(copied), f"the two CRD directories hold different files; {hint}"
    for name in generated:
        assert generated[name] == copied[name], f"charts/sluice/crds/{name} differs from crds/{name}; {hint}"


@pytest.mark.parametrize("name", sorted(yaml_files(COPIED)) or ["(none yet)"])
def test_each_crd_is_a_valid_custom_resource_definition(name: str) -> None:
    if name == "(none yet)":
        pytest.skip("no CRD has been generated yet")
    docs = [d for d in yaml.safe_load_all((COPIED / name).read_bytes()) if d is not None]
    assert len(docs) == 1, "one CRD per file"
    crd = docs[0]
    assert (crd["apiVersion"], crd["kind"]) == ("apiextensions.k8s.io/v1", "CustomResourceDefinition")
    assert crd["metadata"]["name"] == f"{crd['spec']['names']['plural']}.{crd['spec']['group']}"
    assert crd["spec"]["group"] == "sluice.dev"
    for version in KUBE_VERSIONS:
        kubernetes_validate.validate(crd, version, strict=True)


def test_helm_installs_exactly_these_crds() -> None:
    loaded = sorted(pathlib.PurePath(c["filename"]).name for c in chart().crds)
    assert loaded == sorted(yaml_files(COPIED))
