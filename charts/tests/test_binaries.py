"""The chart against the binaries it runs (built by `cargo build --workspace --bins`, as scripts/test.sh does
before these tests): the controller's RBAC rules are exactly the permissions the code uses, and every flag the
chart passes is one the binary accepts."""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import pytest

from conftest import REPO, render, variants

BIN = REPO / "target" / "debug"
# Flags the chart already passes (external etcd with TLS) that the binaries do not accept yet. Remove an entry as
# soon as the binaries take it; the test fails when an entry is no longer needed.
PENDING_FLAGS: set[str] = set()


def binary(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `cargo build --workspace --bins` first")
    return str(path)


def printed_rbac() -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) for every permission `sluice-controller --print-rbac` declares."""
    out = subprocess.run([binary("sluice-controller"), "--print-rbac"], check=True, capture_output=True, text=True)
    rules = json.loads(out.stdout)
    return {(r["apiGroup"], r["resource"], v) for r in rules for v in r["verbs"]}


def chart_rbac(values: dict[str, Any]) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) for every rule of the chart's Roles and ClusterRoles."""
    rendered = render(values)
    granted = set()
    for role in rendered.of_kind("ClusterRole") + rendered.of_kind("Role"):
        for rule in role["rules"]:
            assert "resourceNames" not in rule and "nonResourceURLs" not in rule
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        assert "*" not in (group, resource, verb), f"wildcard in {role['metadata']['name']}"
                        granted.add((group, resource, verb))
    return granted


@pytest.mark.parametrize("name", sorted(variants()))
def test_rbac_is_exactly_what_the_controller_uses(name: str) -> None:
    used = printed_rbac()
    granted = chart_rbac(variants()[name])
    assert granted - used == set(), "the chart grants permissions the controller never uses"
    assert used - granted == set(), "the controller uses permissions the chart does not grant"


def test_rbac_binds_the_controller_service_account() -> None:
    rendered = render()
    for binding in rendered.of_kind("ClusterRoleBinding") + rendered.of_kind("RoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "sluice-controller", "namespace": "sluice"}]
        kind = binding["roleRef"]["kind"]
        assert rendered.one(kind, binding["roleRef"]["name"])


def accepted_flags(name: str) -> set[str]:
    out = subprocess.run([binary(name), "--help"], check=True, capture_output=True, text=True).stdout
    return set(re.findall(r"(--[a-z][a-z0-9-]*)", out))


@pytest.mark.parametrize("name", sorted(variants()))
def test_chart_passes_only_flags_the_binaries_accept(name: str) -> None:
    rendered = render(variants()[name])
    pending_used = set()
    for workload in rendered.objects:
        if workload["kind"] not in ("Deployment", "DaemonSet"):
            continue
        for c in workload["spec"]["template"]["spec"]["containers"]:
            accepted = accepted_flags(c["command"][0])
            for arg in c.get("args", []):
                flag = arg.partition("=")[0]
                if flag in accepted:
                    continue
                assert flag in PENDING_FLAGS, f"{c['command'][0]} does not accept {flag}"
                pending_used.add(flag)
    for flag in pending_used:
        if all(flag in accepted_flags(b) for b in ("sluice-controller", "sluice-dataplane")):
            pytest.fail(f"both binaries now accept {flag}: remove it from PENDING_FLAGS")
