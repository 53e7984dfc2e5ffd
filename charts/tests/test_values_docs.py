"""Every value of the chart is documented and typed: each key declared in values.schema.json has a default in
values.yaml with a comment right above it, and values.yaml holds no key the schema does not declare."""

from __future__ import annotations

import json
import re
from typing import Any

from conftest import CHART, load_yaml


def schema() -> dict[str, Any]:
    return json.loads((CHART / "values.schema.json").read_text())


def declared(node: dict[str, Any], path: tuple[str, ...] = ()) -> dict[tuple[str, ...], dict[str, Any]]:
    """Every property path the schema declares, with its schema."""
    out = {}
    for key, sub in node.get("properties", {}).items():
        out[path + (key,)] = sub
        out.update(declared(sub, path + (key,)))
    return out


def commented_keys() -> set[tuple[str, ...]]:
    """Paths of the keys in values.yaml that have a comment on the line(s) right above them."""
    out, stack, previous = set(), [], ""
    for line in (CHART / "values.yaml").read_text().splitlines():
        m = re.match(r"^( *)([A-Za-z][A-Za-z0-9]*):", line)
        if m:
            depth = len(m.group(1)) // 2
            stack = stack[:depth] + [m.group(2)]
            if previous.lstrip().startswith("#"):
                out.add(tuple(stack))
        if line.strip():
            previous = line
    return out


def test_every_schema_property_has_a_documented_default() -> None:
    defaults = load_yaml(CHART / "values.yaml")
    documented = commented_keys()
    for path in declared(schema()):
        node = defaults
        for key in path:
            assert isinstance(node, dict) and key in node, f"{'.'.join(path)} has no default in values.yaml"
            node = node[key]
        assert path in documented, f"{'.'.join(path)} has no comment above it in values.yaml"


def test_values_yaml_has_no_undeclared_key() -> None:
    paths = declared(schema())

    def walk(node: Any, path: tuple[str, ...]) -> None:
        if not isinstance(node, dict):
            return
        for key, value in node.items():
            sub = path + (key,)
            parent = paths.get(path) if path else schema()
            if parent is not None and "properties" not in parent:
                return  # a free-form object (resources, affinity, probes...): Kubernetes types it
            assert sub in paths, f"{'.'.join(sub)} is in values.yaml but not in values.schema.json"
            walk(value, sub)

    walk(load_yaml(CHART / "values.yaml"), ())
