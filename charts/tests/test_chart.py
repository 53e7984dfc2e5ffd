"""The Helm chart, rendered by Helm's own engine for the default values and every documented variant
(charts/sluice/ci/*-values.yaml): lint, values schema, Kubernetes schemas, and the properties the chart promises
(security, probes, draining, scaling, etcd, labels). The default rendering is compared with a golden file."""

from __future__ import annotations

import base64
import difflib
import re
import subprocess
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest

from conftest import (
    CHART,
    GOLDEN,
    KUBE_VERSIONS,
    NAMESPACE,
    RELEASE,
    REPO,
    UPDATE_GOLDEN,
    chart,
    render,
    variants,
)

CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "IngressClass", "CustomResourceDefinition"}
WORKLOADS = {"Deployment", "DaemonSet", "StatefulSet"}
COMMON_LABELS = (
    "helm.sh/chart",
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app.kubernetes.io/version",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
)


def args_of(container: dict[str, Any]) -> dict[str, str]:
    """A container's `--flag=value` arguments as a map."""
    out = {}
    for arg in container.get("args", []):
        flag, _, value = arg.partition("=")
        out[flag] = value
    return out


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def container(workload: dict[str, Any], name: str) -> dict[str, Any]:
    found = [c for c in pod_spec(workload)["containers"] if c["name"] == name]
    assert len(found) == 1, f"no container {name} in {workload['metadata']['name']}"
    return found[0]


def dataplane(values: dict[str, Any]) -> dict[str, Any]:
    kind = values.get("dataplane", {}).get("kind", "Deployment")
    return render(values).one(kind, "sluice-dataplane")


# --- lint and values ------------------------------------------------------------------------------------------


def test_helm_lint_strict(variant: tuple[str, dict[str, Any]]) -> None:
    _, values = variant
    report = helm_python.lint(str(CHART), values, strict=True, kube_version="v1." + KUBE_VERSIONS[0][2:])
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems and not report["errors"], report


def test_values_match_the_schema(variant: tuple[str, dict[str, Any]]) -> None:
    _, values = variant
    chart().validate_schema(values)


@pytest.mark.parametrize(
    "values",
    [
        {"dataplane": {"kidn": "DaemonSet"}},  # a misspelt key
        {"dataplane": {"kind": "StatefulSet"}},
        {"dataplane": {"service": {"type": "ExternalName"}}},
        {"etcd": {"replicas": 2}},  # an even member count adds no fault tolerance
        {"etcd": {"external": {"endpoints": ["etcd:2379"]}}},  # not a URL
        {"controller": {"extraArgs": ["debug"]}},  # not a flag
        {"image": {"digest": "latest"}},
    ],
)
def test_schema_rejects_bad_values(values: dict[str, Any]) -> None:
    with pytest.raises(helm_python.HelmError):
        chart().validate_schema(values)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"etcd": {"enabled": False}}, "etcd.external.endpoints"),
        (
            {"etcd": {"enabled": False, "external": {"endpoints": ["https://e:2379"], "tls": {"enabled": True}}}},
            "secretName",
        ),
        ({"dataplane": {"terminationGracePeriodSeconds": 20}}, "must exceed"),
        ({"dataplane": {"autoscaling": {"minReplicas": 5, "maxReplicas": 3}}}, "minReplicas"),
        ({"dataplane": {"resources": {"requests": {"cpu": None}}}}, "requests.cpu"),  # null removes a default
    ],
)
def test_inconsistent_values_fail_with_a_clear_message(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmError, match=re.escape(message)):
        chart().render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)


# --- every object is valid Kubernetes -------------------------------------------------------------------------


SERVICE_MONITOR_SCHEMA = {
    # The fields of monitoring.coreos.com/v1 ServiceMonitor the chart uses (the Operator's CRD is not vendored).
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "namespaceSelector": {
                    "type": "object",
                    "properties": {"matchNames": {"type": "array", "items": {"type": "string"}}},
                },
                "selector": {"type": "object", "properties": {"matchLabels": {"type": "object"}}},
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                            "scrapeTimeout": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                            # The operator's SafeAuthorization: a scheme and a SecretKeySelector.
                            "authorization": {
                                "type": "object",
                                "additionalProperties": False,
                                "required": ["credentials"],
                                "properties": {
                                    "type": {"type": "string"},
                                    "credentials": {
                                        "type": "object",
                                        "additionalProperties": False,
                                        "required": ["key"],
                                        "properties": {
                                            "name": {"type": "string"},
                                            "key": {"type": "string"},
                                            "optional": {"type": "boolean"},
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_object_is_valid_for_kubernetes(variant: tuple[str, dict[str, Any]], kube_version: str) -> None:
    import jsonschema

    _, values = variant
    rendered = render(values)
    assert rendered.objects
    for obj in rendered.objects:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] == "ServiceMonitor":
            jsonschema.validate(obj, SERVICE_MONITOR_SCHEMA)
            continue
        try:
            kubernetes_validate.validate(obj, kube_version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{name} is not valid for Kubernetes {kube_version}: {e.message} at {list(e.path)}")
        except kubernetes_validate.SchemaNotFoundError as e:
            pytest.fail(f"{name}: {e.message}")


def test_objects_are_namespaced_as_kubernetes_expects(variant: tuple[str, dict[str, Any]]) -> None:
    _, values = variant
    for obj in render(values).objects:
        ns = obj["metadata"].get("namespace")
        if obj["kind"] in CLUSTER_SCOPED:
            assert ns is None, f"{obj['kind']} is cluster-scoped"
        else:
            assert ns == NAMESPACE, f"{obj['kind']}/{obj['metadata']['name']} must be in the release namespace"


def test_names_are_unique(variant: tuple[str, dict[str, Any]]) -> None:
    _, values = variant
    keys = [(o["kind"], o["metadata"]["name"]) for o in render(values).objects]
    assert len(keys) == len(set(keys))


def test_labels_and_selectors(variant: tuple[str, dict[str, Any]]) -> None:
    _, values = variant
    rendered = render(values)
    pod_labels = []
    for obj in rendered.objects:
        labels = obj["metadata"].get("labels", {})
        missing = [k for k in COMMON_LABELS if k not in labels]
        assert not missing, f"{obj['kind']}/{obj['metadata']['name']} lacks {missing}"
        if obj["kind"] in WORKLOADS:
            selector = obj["spec"]["selector"]["matchLabels"]
            template_labels = obj["spec"]["template"]["metadata"]["labels"]
            assert selector.items() <= template_labels.items()
            assert "app.kubernetes.io/version" not in selector, "a selector must not change on upgrade"
            pod_labels.append(template_labels)
    for svc in rendered.of_kind("Service"):
        selector = svc["spec"]["selector"]
        assert any(selector.items() <= labels.items() for labels in pod_labels), svc["metadata"]["name"]


# --- pods: security, resources, probes --------------------------------------------------------------------------


def test_pods_are_locked_down(variant: tuple[str, dict[str, Any]]) -> None:
    _, values = variant
    for workload in (o for o in render(values).objects if o["kind"] in WORKLOADS):
        spec = pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] != 0
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert not spec.get("hostNetwork")
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert not sc.get("capabilities", {}).get("add")
            assert not sc.get("privileged")
            assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
            assert c["resources"]["limits"]["memory"]
            assert c["readinessProbe"] and c["livenessProbe"]


# Volume types the Pod Security Standards' restricted profile admits.
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}


def restricted_violations(spec: dict[str, Any]) -> list[str]:
    """What in a pod spec the Pod Security Standards' `restricted` profile (and `baseline`, which it includes)
    forbids, as the built-in Pod Security Admission checks it."""
    out = []
    pod = spec.get("securityContext", {})
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            out.append(field)
    for v in spec.get("volumes", []):
        kinds = set(v) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            out.append(f"volume {v['name']}: {kinds}")
    if pod.get("sysctls"):
        out.append("sysctls")
    if pod.get("seLinuxOptions", {}).get("type") not in (None, "", "container_t", "container_init_t", "container_kvm_t"):
        out.append("seLinuxOptions.type")
    for c in spec.get("initContainers", []) + spec["containers"]:
        sc, name = c.get("securityContext", {}), c["name"]
        merged = {**pod, **sc}
        if sc.get("privileged"):
            out.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{name}: allowPrivilegeEscalation must be false")
        if merged.get("runAsNonRoot") is not True:
            out.append(f"{name}: runAsNonRoot must be true")
        if merged.get("runAsUser") == 0:
            out.append(f"{name}: runAsUser 0")
        seccomp = merged.get("seccompProfile", {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"{name}: seccompProfile {seccomp}")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            out.append(f"{name}: capabilities must drop ALL")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            out.append(f"{name}: capabilities added")
        if sc.get("procMount") not in (None, "Default"):
            out.append(f"{name}: procMount")
        if merged.get("appArmorProfile", {}).get("type") == "Unconfined":
            out.append(f"{name}: AppArmor unconfined")
        for port in c.get("ports", []):
            if port.get("hostPort"):
                out.append(f"{name}: hostPort {port['hostPort']}")
    return out


def test_pods_meet_pod_security_restricted(variant: tuple[str, dict[str, Any]]) -> None:
    """Every pod the chart renders may run in a namespace labelled `pod-security.kubernetes.io/enforce:
    restricted`, except for the host ports a variant asks for (which only `privileged` admits)."""
    name, values = variant
    for workload in (o for o in render(values).objects if o["kind"] in WORKLOADS):
        found = restricted_violations(pod_spec(workload))
        if name == "default" or not any("hostPort" in f for f in found):
            assert found == [], f"{name}: {workload['metadata']['name']}: {found}"
        else:
            assert all("hostPort" in f for f in found), f"{name}: {workload['metadata']['name']}: {found}"
    assert restricted_violations({"containers": [{"name": "bad", "securityContext": {"privileged": True}}]})


def test_etcd_is_reachable_only_from_sluice_pods() -> None:
    rendered = render({})
    policy = rendered.one("NetworkPolicy", "sluice-etcd")
    etcd = rendered.one("StatefulSet", "sluice-etcd")
    etcd_labels = etcd["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= etcd_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    named = {p["name"] for p in container(etcd, "etcd")["ports"]}
    by_port: dict[str, list[dict[str, Any]]] = {}
    for rule in policy["spec"]["ingress"]:
        for port in rule["ports"]:
            assert port["port"] in named, f"port {port['port']} is not a port of the etcd container"
            by_port.setdefault(port["port"], []).append(rule)
    assert set(by_port) == {"client", "peer", "metrics"}

    def admitted(rules: list[dict[str, Any]], labels: dict[str, str]) -> bool:
        return any(
            "from" not in r or any(p["podSelector"]["matchLabels"].items() <= labels.items() for p in r["from"])
            for r in rules
        )

    pods = {
        "controller": rendered.one("Deployment", "sluice-controller")["spec"]["template"]["metadata"]["labels"],
        "dataplane": dataplane({})["spec"]["template"]["metadata"]["labels"],
        "etcd": etcd_labels,
    }
    stranger = {"app.kubernetes.io/name": "other", "app": "tenant"}
    assert all(admitted(by_port["client"], labels) for labels in pods.values())
    assert not admitted(by_port["client"], stranger)
    assert admitted(by_port["peer"], etcd_labels)
    assert not admitted(by_port["peer"], pods["dataplane"]) and not admitted(by_port["peer"], stranger)
    assert admitted(by_port["metrics"], stranger), "scrapers reach the metrics port"

    backup = {"podSelector": {"matchLabels": {"app": "etcd-backup"}}}
    values = {"etcd": {"networkPolicy": {"extraClients": [backup]}}}
    chart().validate_schema(values)
    extra = render(values).one("NetworkPolicy", "sluice-etcd")
    assert admitted([r for r in extra["spec"]["ingress"] if r["ports"][0]["port"] == "client"], {"app": "etcd-backup"})
    assert not render({"etcd": {"networkPolicy": {"enabled": False}}}).of_kind("NetworkPolicy")
    external = {"etcd": {"enabled": False, "external": {"endpoints": ["https://etcd.example:2379"]}}}
    assert not render(external).of_kind("NetworkPolicy")


@pytest.mark.parametrize(("component", "binary"), [("controller", "sluice-controller"), ("dataplane", "sluice-dataplane")])
def test_probes_hit_the_admin_listener(variant: tuple[str, dict[str, Any]], component: str, binary: str) -> None:
    _, values = variant
    rendered = render(values)
    workload = rendered.one("Deployment", "sluice-controller") if component == "controller" else dataplane(values)
    c = container(workload, component)
    assert c["command"] == [binary]
    admin = {p["name"]: p["containerPort"] for p in c["ports"]}["admin"]
    assert args_of(c)["--admin-addr"] == f"0.0.0.0:{admin}", "the admin listener must be reachable by the kubelet"
    # The data plane is ready after its first full read of etcd; a controller standing by for the Lease never
    # syncs, so its readiness is liveness (it takes no traffic).
    ready_path = "/readyz" if component == "dataplane" else "/healthz"
    assert c["readinessProbe"]["httpGet"] == {"path": ready_path, "port": "admin"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}


def test_components_share_etcd_settings(variant: tuple[str, dict[str, Any]]) -> None:
    _, values = variant
    rendered = render(values)
    ctl = args_of(container(rendered.one("Deployment", "sluice-controller"), "controller"))
    dp = args_of(container(dataplane(values), "dataplane"))
    etcd_flags = {k: v for k, v in ctl.items() if k.startswith("--etcd-")}
    assert etcd_flags == {k: v for k, v in dp.items() if k.startswith("--etcd-")}
    assert etcd_flags["--etcd-prefix"] == "/sluice"


# --- the data plane: draining, rollout, scaling -------------------------------------------------------------------


def test_dataplane_drains_before_it_is_killed(variant: tuple[str, dict[str, Any]]) -> None:
    _, values = variant
    workload = dataplane(values)
    c = container(workload, "dataplane")
    sleep = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace = float(args_of(c)["--shutdown-grace"])
    assert sleep >= 5, "endpoints need a few seconds to drop a terminating pod"
    assert pod_spec(workload)["terminationGracePeriodSeconds"] > sleep + grace


def test_dataplane_rolls_without_losing_capacity(variant: tuple[str, dict[str, Any]]) -> None:
    _, values = variant
    workload = dataplane(values)
    strategy = workload["spec"]["strategy" if workload["kind"] == "Deployment" else "updateStrategy"]
    assert strategy == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    assert workload["spec"]["minReadySeconds"] > 0


def test_dataplane_has_no_kubernetes_credentials(variant: tuple[str, dict[str, Any]]) -> None:
    _, values = variant
    rendered = render(values)
    assert pod_spec(dataplane(values))["automountServiceAccountToken"] is False
    assert rendered.one("ServiceAccount", "sluice-dataplane")["automountServiceAccountToken"] is False
    subjects = [s["name"] for b in rendered.of_kind("ClusterRoleBinding") + rendered.of_kind("RoleBinding") for s in b["subjects"]]
    assert "sluice-dataplane" not in subjects


def test_default_scaling_and_disruption_budgets() -> None:
    rendered = render()
    hpa = rendered.one("HorizontalPodAutoscaler", "sluice-dataplane")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "sluice-dataplane"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 10)
    assert {m["resource"]["name"] for m in hpa["spec"]["metrics"]} == {"cpu", "memory"}
    assert "replicas" not in rendered.one("Deployment", "sluice-dataplane")["spec"], "the HPA owns the replica count"
    assert rendered.one("Deployment", "sluice-controller")["spec"]["replicas"] == 2
    for name in ("sluice-controller", "sluice-dataplane"):
        assert rendered.one("PodDisruptionBudget", name)["spec"]["minAvailable"] == 1
        affinity = pod_spec(rendered.one("Deployment", name))["affinity"]["podAntiAffinity"]
        assert affinity["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]["topologyKey"] == (
            "kubernetes.io/hostname"
        )
    svc = rendered.one("Service", "sluice-dataplane")
    assert svc["spec"]["type"] == "LoadBalancer"
    assert svc["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
        {"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"},
    ]
    ctl = args_of(container(rendered.one("Deployment", "sluice-controller"), "controller"))
    assert ctl["--publish-service"] == f"{NAMESPACE}/sluice-dataplane"
    ingress_class = rendered.one("IngressClass", "sluice")
    assert ingress_class["spec"]["controller"] == ctl["--controller-name"] == "sluice.dev/ingress-controller"
    assert "annotations" not in ingress_class["metadata"], "sluice is not the default class unless asked"


def test_default_class_is_optional() -> None:
    ingress_class = render({"ingressClass": {"default": True}}).one("IngressClass", "sluice")
    assert ingress_class["metadata"]["annotations"] == {"ingressclass.kubernetes.io/is-default-class": "true"}


def test_in_chart_etcd_is_a_three_member_cluster() -> None:
    rendered = render()
    sts = rendered.one("StatefulSet", "sluice-etcd")
    assert sts["spec"]["replicas"] == 3
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    headless = rendered.one("Service", sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    members = [f"sluice-etcd-{i}.sluice-etcd-headless.{NAMESPACE}.svc" for i in range(3)]
    etcd_args = args_of(container(sts, "etcd"))
    assert etcd_args["--initial-cluster"] == ",".join(f"sluice-etcd-{i}=https://{m}:2380" for i, m in enumerate(members))
    ctl = args_of(container(rendered.one("Deployment", "sluice-controller"), "controller"))
    assert ctl["--etcd-endpoints"] == ",".join(f"https://{m}:2379" for m in members)
    plain = args_of(container(render({"etcd": {"tls": {"enabled": False}}}).one("StatefulSet", "sluice-etcd"), "etcd"))
    assert plain["--initial-cluster"].count("=http://") == 3 and "--client-cert-auth" not in plain
    assert rendered.one("PodDisruptionBudget", "sluice-etcd")["spec"]["minAvailable"] == 2
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "8Gi"


OPTIONAL_VALUES = {
    "spread-and-overrides": {
        "commonLabels": {"team": "edge"},
        "controller": {
            "podAntiAffinity": "hard",
            "publishStatusAddress": ["203.0.113.10"],
            "image": {"repository": "registry.example.com/sluice-controller"},
            "extraArgs": ["--debounce-ms=250"],
            "extraEnv": [{"name": "RUST_BACKTRACE", "value": "1"}],
        },
        "dataplane": {
            "workers": 4,
            "topologySpreadConstraints": [
                {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway"}
            ],
            "image": {"digest": "sha256:" + "0" * 64},
            "service": {"externalTrafficPolicy": "Local", "loadBalancerSourceRanges": ["10.0.0.0/8"]},
        },
        "etcd": {"replicas": 5, "persistence": {"enabled": False}, "podAntiAffinity": "soft"},
        "ingressClass": {"default": True},
    },
    "daemonset-hostport": {
        "dataplane": {
            "kind": "DaemonSet",
            "hostPort": 80,
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}},
        },
        "etcd": {"replicas": 1},
        "metrics": {"service": {"enabled": True}},
    },
}


@pytest.mark.parametrize("name", sorted(OPTIONAL_VALUES))
def test_optional_values_render_valid_objects(name: str) -> None:
    values = OPTIONAL_VALUES[name]
    chart().validate_schema(values)
    rendered = render(values)
    for obj in rendered.objects:
        kubernetes_validate.validate(obj, KUBE_VERSIONS[0], strict=True)
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    if name == "spread-and-overrides":
        dp = rendered.one("Deployment", "sluice-dataplane")
        spread = pod_spec(dp)["topologySpreadConstraints"][0]
        assert spread["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == "dataplane"
        assert container(dp, "dataplane")["image"] == "sluice@sha256:" + "0" * 64
        ctl = rendered.one("Deployment", "sluice-controller")
        assert container(ctl, "controller")["image"] == "registry.example.com/sluice-controller:0.1.0"
        assert args_of(container(ctl, "controller"))["--publish-status-address"] == "203.0.113.10"
        assert "--publish-service" not in args_of(container(ctl, "controller"))
        assert len(args_of(container(ctl, "controller"))["--etcd-endpoints"].split(",")) == 5
        assert rendered.one("PodDisruptionBudget", "sluice-etcd")["spec"]["minAvailable"] == 3
        assert all(o["metadata"]["labels"]["team"] == "edge" for o in rendered.objects)
    else:
        ds = rendered.one("DaemonSet", "sluice-dataplane")
        assert container(ds, "dataplane")["ports"][0]["hostPort"] == 80
        assert not [p for p in rendered.of_kind("PodDisruptionBudget") if "etcd" in p["metadata"]["name"]]


# --- the documented variants ------------------------------------------------------------------------------------


def test_daemonset_variant() -> None:
    rendered = render(variants()["daemonset"])
    assert not rendered.of_kind("HorizontalPodAutoscaler")
    assert [o["metadata"]["name"] for o in rendered.of_kind("PodDisruptionBudget")] == ["sluice-controller", "sluice-etcd"]
    assert rendered.one("DaemonSet", "sluice-dataplane")
    assert not [d for d in rendered.of_kind("Deployment") if d["metadata"]["name"] == "sluice-dataplane"]
    svc = rendered.one("Service", "sluice-dataplane")["spec"]
    assert (svc["type"], svc["externalTrafficPolicy"], svc["ports"][0]["nodePort"]) == ("NodePort", "Local", 30080)


def test_external_etcd_variant_mounts_the_client_certificate() -> None:
    values = variants()["external-etcd"]
    rendered = render(values)
    assert not rendered.of_kind("StatefulSet")
    assert not [s for s in rendered.of_kind("Service") if "etcd" in s["metadata"]["name"]]
    for workload, name in ((rendered.one("Deployment", "sluice-controller"), "controller"), (dataplane(values), "dataplane")):
        c = container(workload, name)
        args = args_of(c)
        assert args["--etcd-endpoints"] == ",".join(values["etcd"]["external"]["endpoints"])
        mount = next(m for m in c["volumeMounts"] if m["name"] == "etcd-tls")
        assert mount["readOnly"] is True
        for flag, key in (("--etcd-ca-file", "ca.crt"), ("--etcd-cert-file", "tls.crt"), ("--etcd-key-file", "tls.key")):
            assert args[flag] == f"{mount['mountPath']}/{key}"
        volume = next(v for v in pod_spec(workload)["volumes"] if v["name"] == "etcd-tls")
        assert volume["secret"]["secretName"] == "sluice-etcd-client"


def test_upstream_ca_secret_is_mounted_for_the_dataplane() -> None:
    values = {"dataplane": {"upstreamCA": {"secretName": "backend-ca", "key": "bundle.pem"}}}
    chart().validate_schema(values)
    rendered = render(values)
    c = container(dataplane(values), "dataplane")
    mount = next(m for m in c["volumeMounts"] if m["name"] == "upstream-ca")
    assert mount["readOnly"] is True
    assert args_of(c)["--upstream-ca-file"] == f"{mount['mountPath']}/bundle.pem"
    volume = next(v for v in pod_spec(dataplane(values))["volumes"] if v["name"] == "upstream-ca")
    assert volume["secret"]["secretName"] == "backend-ca"
    for obj in rendered.objects:
        kubernetes_validate.validate(obj, KUBE_VERSIONS[0], strict=True)
    # Without a Secret nothing is added.
    assert "--upstream-ca-file" not in args_of(container(dataplane({}), "dataplane"))


def test_dataplane_refuses_loopback_its_own_address_and_the_kubernetes_api() -> None:
    c = container(dataplane({}), "dataplane")
    denied = args_of(c)["--upstream-deny"].split(",")
    assert denied == ["127.0.0.0/8", "::1", "$(POD_IP)", "$(KUBERNETES_SERVICE_HOST)"]
    # `$(VAR)` in args is expanded by the kubelet from the container's environment: POD_IP from the downward API,
    # KUBERNETES_SERVICE_HOST set in every container; an unknown name would be passed on literally.
    pod_ip = next(e for e in c["env"] if e["name"] == "POD_IP")
    assert pod_ip["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert "--upstream-allow" not in args_of(c)

    values = {"dataplane": {"upstreamDeny": [], "upstreamAllow": ["10.0.0.0/8", "fd00::/8"]}}
    chart().validate_schema(values)
    args = args_of(container(dataplane(values), "dataplane"))
    assert "--upstream-deny" not in args
    assert args["--upstream-allow"] == "10.0.0.0/8,fd00::/8"


def test_admin_ports_need_the_token_and_the_servicemonitor_presents_it() -> None:
    values = {"metrics": {"serviceMonitor": {"enabled": True}}}
    rendered = render(values)
    secret = rendered.one("Secret", "sluice-admin-token")
    assert len(base64.b64decode(secret["data"]["token"])) >= 32
    for workload, name in ((rendered.one("Deployment", "sluice-controller"), "controller"), (dataplane(values), "dataplane")):
        c = container(workload, name)
        mount = next(m for m in c["volumeMounts"] if m["name"] == "admin-token")
        assert args_of(c)["--admin-token-file"] == f"{mount['mountPath']}/token"
        volume = next(v for v in pod_spec(workload)["volumes"] if v["name"] == "admin-token")
        assert volume["secret"]["secretName"] == "sluice-admin-token"
        # The probes need no token.
        assert c["readinessProbe"]["httpGet"]["path"] in ("/readyz", "/healthz")
    for endpoint in rendered.one("ServiceMonitor", "sluice")["spec"]["endpoints"]:
        assert endpoint["authorization"] == {"type": "Bearer", "credentials": {"name": "sluice-admin-token", "key": "token"}}

    off = {"metrics": {"auth": {"enabled": False}, "serviceMonitor": {"enabled": True}}}
    chart().validate_schema(off)
    assert "--admin-token-file" not in args_of(container(dataplane(off), "dataplane"))
    assert "authorization" not in render(off).one("ServiceMonitor", "sluice")["spec"]["endpoints"][0]
    mine = {"metrics": {"auth": {"existingSecret": "my-token"}}}
    assert not [s for s in render(mine).of_kind("Secret") if s["metadata"]["name"].endswith("admin-token")]
    volume = next(v for v in pod_spec(dataplane(mine))["volumes"] if v["name"] == "admin-token")
    assert volume["secret"]["secretName"] == "my-token"


def test_credentials_are_sealed_with_a_generated_keyring() -> None:
    rendered = render()
    keyring = base64.b64decode(rendered.one("Secret", "sluice-credential-keyring")["data"]["keyring"]).decode()
    key_id, key = keyring.split()
    assert key_id == "k1" and len(base64.b64decode(key)) == 32
    for workload, name in ((rendered.one("Deployment", "sluice-controller"), "controller"), (dataplane({}), "dataplane")):
        c = container(workload, name)
        mount = next(m for m in c["volumeMounts"] if m["name"] == "credential-keyring")
        assert args_of(c)["--credential-keyring"] == f"{mount['mountPath']}/keyring"
        volume = next(v for v in pod_spec(workload)["volumes"] if v["name"] == "credential-keyring")
        assert volume["secret"]["secretName"] == "sluice-credential-keyring"
    off = {"credentialKeyring": {"enabled": False}}
    chart().validate_schema(off)
    assert "--credential-keyring" not in args_of(container(dataplane(off), "dataplane"))
    mine = {"credentialKeyring": {"existingSecret": "my-keyring"}}
    assert not [s for s in render(mine).of_kind("Secret") if s["metadata"]["name"].endswith("keyring")]


def test_hpa_off_variant() -> None:
    rendered = render(variants()["hpa-off"])
    assert not rendered.of_kind("HorizontalPodAutoscaler")
    assert rendered.one("Deployment", "sluice-dataplane")["spec"]["replicas"] == 3
    assert rendered.one("Service", "sluice-dataplane")["spec"]["type"] == "ClusterIP"


def test_servicemonitor_variant_scrapes_both_components() -> None:
    rendered = render(variants()["servicemonitor"])
    monitor = rendered.one("ServiceMonitor", "sluice")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    selector = monitor["spec"]["selector"]["matchLabels"]
    scraped = [s for s in rendered.of_kind("Service") if selector.items() <= s["metadata"]["labels"].items()]
    assert sorted(s["metadata"]["name"] for s in scraped) == ["sluice-controller-metrics", "sluice-dataplane-metrics"]
    for svc in scraped:
        assert [p["name"] for p in svc["spec"]["ports"]] == [monitor["spec"]["endpoints"][0]["port"]]
        assert svc["spec"]["ports"][0]["targetPort"] == "admin"


def test_no_servicemonitor_by_default() -> None:
    assert not render().of_kind("ServiceMonitor")


def test_every_variant_is_documented() -> None:
    install = (REPO / "docs" / "install.md").read_text()
    for name in variants():
        if name != "default":
            assert f"ci/{name}-values.yaml" in install, f"docs/install.md does not describe the {name} variant"


def test_notes_give_first_commands(variant: tuple[str, dict[str, Any]]) -> None:
    _, values = variant
    notes = render(values).templates["sluice/templates/NOTES.txt"]
    assert "rollout status" in notes and "kubectl create ingress" in notes


# --- golden ------------------------------------------------------------------------------------------------------


def openssl(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["openssl", *args], input=stdin, capture_output=True, check=False)


def test_etcd_speaks_tls_with_client_certificates_by_default(tmp_path: Path) -> None:
    rendered = render()
    sts = rendered.one("StatefulSet", "sluice-etcd")
    args = args_of(container(sts, "etcd"))
    for flag in ("--listen-client-urls", "--advertise-client-urls", "--listen-peer-urls", "--initial-advertise-peer-urls"):
        assert args[flag].startswith("https://"), flag
    assert args["--listen-metrics-urls"].startswith("http://"), "the probes' port stays plain"
    assert "--client-cert-auth" in args and "--peer-client-cert-auth" in args
    mount = next(m for m in container(sts, "etcd")["volumeMounts"] if m["name"] == "tls")
    for flag in ("--cert-file", "--key-file", "--trusted-ca-file", "--peer-cert-file", "--peer-key-file", "--peer-trusted-ca-file"):
        assert args[flag].startswith(mount["mountPath"] + "/"), flag
    server_secret = next(v for v in pod_spec(sts)["volumes"] if v["name"] == "tls")["secret"]["secretName"]

    # Both components present the client certificate.
    client_secret = None
    for workload, name in ((rendered.one("Deployment", "sluice-controller"), "controller"), (dataplane({}), "dataplane")):
        c = container(workload, name)
        a = args_of(c)
        assert a["--etcd-endpoints"].startswith("https://")
        tls_mount = next(m for m in c["volumeMounts"] if m["name"] == "etcd-tls")
        assert a["--etcd-cert-file"] == f"{tls_mount['mountPath']}/tls.crt"
        volume = next(v for v in pod_spec(workload)["volumes"] if v["name"] == "etcd-tls")
        client_secret = volume["secret"]["secretName"]

    # The generated certificates: the members' names, both purposes, one CA.
    def files(secret: str) -> dict[str, Path]:
        data = rendered.one("Secret", secret)["data"]
        out = {}
        for key, value in data.items():
            out[key] = tmp_path / f"{secret}-{key}"
            out[key].write_bytes(base64.b64decode(value))
        return out

    server, client = files(server_secret), files(client_secret)
    assert server["ca.crt"].read_bytes() == client["ca.crt"].read_bytes()
    for i in range(3):
        host = f"sluice-etcd-{i}.sluice-etcd-headless.{NAMESPACE}.svc"
        for purpose in ("sslserver", "sslclient"):  # the members' certificate is also their peer client certificate
            done = openssl("verify", "-CAfile", str(server["ca.crt"]), "-purpose", purpose, "-verify_hostname", host, str(server["tls.crt"]))
            assert done.returncode == 0, done.stdout + done.stderr
    done = openssl("verify", "-CAfile", str(client["ca.crt"]), "-purpose", "sslclient", str(client["tls.crt"]))
    assert done.returncode == 0, done.stdout + done.stderr
    wrong = openssl("verify", "-CAfile", str(server["ca.crt"]), "-verify_hostname", "etcd.elsewhere.example", str(server["tls.crt"]))
    assert wrong.returncode != 0

    # Existing Secrets replace the generated ones, both or neither.
    values = {"etcd": {"tls": {"existingServerSecret": "my-etcd-server", "existingClientSecret": "my-etcd-client"}}}
    chart().validate_schema(values)
    mine = render(values)
    assert not [s for s in mine.of_kind("Secret") if s["metadata"]["name"].startswith("sluice-etcd")]
    secret_of = lambda w, n: next(v for v in pod_spec(w)["volumes"] if v["name"] == n)["secret"]["secretName"]  # noqa: E731
    assert secret_of(mine.one("StatefulSet", "sluice-etcd"), "tls") == "my-etcd-server"
    assert secret_of(mine.one("Deployment", "sluice-controller"), "etcd-tls") == "my-etcd-client"
    with pytest.raises(Exception, match="go together"):
        render({"etcd": {"tls": {"existingServerSecret": "my-etcd-server"}}})


def test_default_rendering_matches_golden() -> None:
    path = GOLDEN / "default.yaml"
    header = (
        "# The chart rendered with its default values (release sluice, namespace sluice). Regenerate after an\n"
        "# intended change with: SLUICE_UPDATE_GOLDEN=1 .local/venv/bin/python -m pytest charts/tests\n"
    )
    # Generated keys and certificates differ on every render.
    actual = header + re.sub(r"^(  (?:ca\.crt|tls\.crt|tls\.key|token|keyring)): \S+$", r"\1: <generated>", render().manifest(), flags=re.M)
    if UPDATE_GOLDEN:
        path.write_text(actual)
    expected = path.read_text() if path.exists() else ""
    if actual != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), actual.splitlines(True), "golden", "rendered"))
        pytest.fail(
            "the default rendering differs from charts/tests/golden/default.yaml; if intended, run\n"
            "SLUICE_UPDATE_GOLDEN=1 .local/venv/bin/python -m pytest charts/tests\n" + diff[:6000]
        )


def test_https_listener_is_wired_through_to_the_service() -> None:
    values: dict[str, Any] = {}
    c = container(dataplane(values), "dataplane")
    args = args_of(c)
    assert args["--https-addr"] == "0.0.0.0:9443"
    # Redirects to HTTPS name the port clients reach, not the pod's.
    assert args["--https-public-port"] == "443"
    assert {"name": "https", "containerPort": 9443, "protocol": "TCP"} in c["ports"]
    svc = render(values).one("Service", "sluice-dataplane")
    https = next(p for p in svc["spec"]["ports"] if p["name"] == "https")
    assert (https["port"], https["targetPort"]) == (443, "https")
    # A default certificate, and the listener switched off.
    with_default = {"dataplane": {"defaultSsl": "wildcard"}}
    assert args_of(container(dataplane(with_default), "dataplane"))["--default-ssl"] == "wildcard"
    assert "--proxy-protocol" not in args
    behind_nlb = {"dataplane": {"proxyProtocol": True}}
    assert "--proxy-protocol" in args_of(container(dataplane(behind_nlb), "dataplane"))
    off = {"dataplane": {"httpsPort": 0}}
    chart().validate_schema(off)
    assert args_of(container(dataplane(off), "dataplane"))["--https-addr"] == "off"
    svc = render(off).one("Service", "sluice-dataplane")
    assert [p["name"] for p in svc["spec"]["ports"]] == ["http"]
