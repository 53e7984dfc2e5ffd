#!/usr/bin/env bash
# The kind-based end-to-end suite, for machines with a Kubernetes cluster (kind or any other reachable through
# kubectl). It applies the example manifests and checks that the controller in the cluster programs them, then
# rolls the data plane out (`kubectl set image` to SLUICE_IMAGE_NEXT when given, else `kubectl rollout restart`)
# while a load pod (sluice-load) sends requests through the data plane's Service: none may fail.
# Without a reachable cluster it says so and exits 0: the manifest-mode end-to-end tests cover the same pipeline.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v kubectl >/dev/null 2>&1; then
  echo "kind e2e: SKIPPED: kubectl not found, no Kubernetes cluster reachable from this machine"
  exit 0
fi
if ! kubectl cluster-info --request-timeout=5s >/dev/null 2>&1; then
  echo "kind e2e: SKIPPED: no Kubernetes cluster reachable (kubectl cluster-info failed)"
  exit 0
fi

ns=sluice-e2e
image=${SLUICE_IMAGE:-}
if [ -z "$image" ]; then
  echo "kind e2e: SKIPPED: a cluster is reachable but SLUICE_IMAGE (an image with both binaries) is not set"
  exit 0
fi
echo "kind e2e: running against $(kubectl config current-context) with image $image"
kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f -
kubectl apply -f crds/
sed "s|SLUICE_IMAGE|$image|g; s|SLUICE_NAMESPACE|$ns|g" e2e/kind/stack.yaml | kubectl apply -f -
kubectl -n "$ns" apply -f config/examples/00-ingressclass.yaml
kubectl -n "$ns" rollout status deploy/sluice-controller --timeout=180s
kubectl -n "$ns" rollout status deploy/sluice-dataplane --timeout=180s
sed "s|SLUICE_IMAGE_ECHO|$image|g" e2e/kind/echo.yaml | kubectl -n "$ns" apply -f -
kubectl -n "$ns" rollout status deploy/echo --timeout=180s
kubectl -n "$ns" port-forward svc/sluice-dataplane 19080:80 >/dev/null 2>&1 &
pf=$!
trap 'kill $pf 2>/dev/null || true' EXIT
ok=0
for _ in $(seq 1 60); do
  if curl -fsS http://127.0.0.1:19080/echo | grep -q '"backend"'; then ok=1; break; fi
  sleep 2
done
if [ "$ok" != 1 ]; then
  echo "kind e2e: 0 passed, 1 failed: /echo never answered through the data plane"
  kubectl -n "$ns" logs deploy/sluice-controller --tail=50 || true
  exit 1
fi

# A rollout under load: the load pod runs for 120 s from inside the cluster (through the Service, as clients do);
# meanwhile every data plane pod is replaced.
kubectl -n "$ns" delete pod sluice-load --ignore-not-found --wait=true >/dev/null
kubectl -n "$ns" run sluice-load --image="$image" --restart=Never --command -- sluice-load sluice-dataplane:80 /echo 120
kubectl -n "$ns" wait --for=condition=Ready pod/sluice-load --timeout=120s
sleep 5
if [ -n "${SLUICE_IMAGE_NEXT:-}" ]; then
  kubectl -n "$ns" set image deploy/sluice-dataplane "*=$SLUICE_IMAGE_NEXT"
else
  kubectl -n "$ns" rollout restart deploy/sluice-dataplane
fi
kubectl -n "$ns" rollout status deploy/sluice-dataplane --timeout=300s
phase=""
for _ in $(seq 1 90); do
  phase=$(kubectl -n "$ns" get pod sluice-load -o jsonpath='{.status.phase}')
  case "$phase" in Succeeded|Failed) break ;; esac
  sleep 2
done
kubectl -n "$ns" logs pod/sluice-load | tail -6
if [ "$phase" = Succeeded ]; then
  echo "kind e2e: 2 passed, 0 failed"
else
  echo "kind e2e: 1 passed, 1 failed: requests failed during the data plane rollout (load pod $phase)"
  exit 1
fi
