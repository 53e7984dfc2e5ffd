#!/usr/bin/env bash
# Scans the data plane's HTTPS listener with testssl.sh (Debian package `testssl.sh`, installed when missing),
# against the local stack's example certificate (secure.example.test, config/examples/21-ingress-tls.yaml), and
# fails on any finding against Mozilla's intermediate profile:
#   - a protocol other than TLS 1.2 and 1.3 offered, or a cipher suite outside the profile's list;
#   - any finding testssl rates MEDIUM or worse (vulnerabilities, weak keys, broken renegotiation, ...), except
#     that the example certificate is not trusted by the system (it is signed by the demo CA) and has no OCSP or
#     CT data, which says nothing about the TLS stack.
# Usage: scripts/tls-scan.sh [--port N]   (default: a free port). Writes the report to .local/tls-scan/.
set -euo pipefail
cd "$(dirname "$0")/.."
port=0
[ "${1:-}" = --port ] && port="$2"
if ! command -v testssl >/dev/null 2>&1 && ! command -v testssl.sh >/dev/null 2>&1; then
  echo "tls-scan: installing testssl.sh" >&2
  sudo_cmd=()
  [ "$(id -u)" = 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq testssl.sh >/dev/null
fi
testssl=$(command -v testssl || command -v testssl.sh)
scripts/setup.sh
cargo build --workspace --bins -q
if [ "$port" = 0 ]; then
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
fi
out=.local/tls-scan
mkdir -p "$out"
rm -f "$out/report.json"
# In a session of its own, so that etcd, the controller and the data plane it starts are stopped with it.
setsid target/debug/sluice-stack --manifests config/examples --http-port 0 --https-port "$port" > "$out/stack.log" 2>&1 &
stack=$!
stop_stack() {
  kill -INT "$stack" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$stack" 2>/dev/null || break; sleep 0.1; done
  kill -TERM -- "-$stack" 2>/dev/null || true
  wait "$stack" 2>/dev/null || true
}
trap stop_stack EXIT
for _ in $(seq 1 120); do
  grep -q "Edit files in" "$out/stack.log" && break
  if ! kill -0 $stack 2>/dev/null; then cat "$out/stack.log" >&2; exit 1; fi
  sleep 0.5
done
grep -q "Edit files in" "$out/stack.log" || { echo "tls-scan: the local stack did not start" >&2; cat "$out/stack.log" >&2; exit 1; }

echo "tls-scan: testssl against https://secure.example.test:$port (127.0.0.1), a few minutes" >&2
"$testssl" --quiet --color 0 --warnings off --ip 127.0.0.1 --jsonfile "$out/report.json" \
  --protocols --std --server-defaults --vulnerable --fs "secure.example.test:$port" > "$out/report.txt" 2>&1 || true
[ -s "$out/report.json" ] || { echo "tls-scan: testssl wrote no report; see $out/report.txt" >&2; exit 1; }

python3 - "$out/report.json" <<'PY'
import json, sys
findings = json.load(open(sys.argv[1]))
# Mozilla's intermediate profile (server side, https://ssl-config.mozilla.org/guidelines/5.7.json).
intermediate = {
    "TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256",
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    "DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384", "DHE-RSA-CHACHA20-POLY1305",
}
# About the demo certificate, not the TLS stack: its CA is not a public one, and it has no OCSP, CRL or CT data.
certificate_only = ("cert_chain_of_trust", "cert_trust", "cert_ocspURL", "cert_crlDistributionPoints",
                    "cert_revocation", "OCSP_stapling", "cert_certificateTransparency", "DNS_CAArecord",
                    "cert_caIssuers", "cert_extlifeSpan", "cert_validityPeriod")
problems, offered, warnings = [], set(), []
for f in findings:
    fid, sev, text = f.get("id", ""), f.get("severity", ""), f.get("finding", "")
    if fid == "PFS_ciphers":
        offered.update(text.split())
    if fid in ("SSLv2", "SSLv3", "TLS1", "TLS1_1") and "not offered" not in text:
        problems.append(f"{fid}: {text}")
    if fid.startswith("cipherlist_") and fid != "cipherlist_STRONG" and "not offered" not in text:
        problems.append(f"{fid}: {text}")
    if sev in ("MEDIUM", "HIGH", "CRITICAL") and not fid.startswith(certificate_only):
        problems.append(f"{fid} [{sev}]: {text}")
    if sev == "WARN":
        warnings.append(f"{fid}: {text}")
if not offered:
    problems.append("testssl listed no forward-secret cipher suites")
for c in sorted(offered - intermediate):
    problems.append(f"cipher outside Mozilla intermediate: {c}")
for w in warnings:
    # testssl's OpenSSL could not run a check: its renegotiation probe sends no SNI, which the example refuses
    # (no default certificate); rustls implements no renegotiation at all.
    print(f"tls-scan: testssl could not complete a check: {w}")
print(f"tls-scan: {len(findings)} checks; suites offered: {' '.join(sorted(offered))}")
if problems:
    print("tls-scan: FINDINGS:")
    for p in problems:
        print("  - " + p)
    sys.exit(1)
print("tls-scan: no finding at Mozilla's intermediate profile")
PY
