#!/usr/bin/env bash
# Deployment checks (run by .ci/run after the test suite, which builds target/debug/sluice):
# the alert rules and their unit tests, the Kubernetes manifests against the Kubernetes schemas
# (offline), the shell scripts, the systemd unit (where systemd-analyze is installed), and
# `promtool check metrics` on a scrape of a running sluice.
set -euo pipefail
cd "$(dirname "$0")/.."

promtool check rules deploy/prometheus/alerts.yml
promtool test rules deploy/prometheus/alerts_test_static.yml deploy/prometheus/alerts_test_oauth.yml \
  deploy/prometheus/alerts_test_tls.yml deploy/prometheus/alerts_test_reconnect.yml
manifests=(deploy/kubernetes/deployment.yaml deploy/kubernetes/redis.yaml
  deploy/kubernetes/networkpolicy.yaml deploy/kubernetes/pdb.yaml)
kubernetes-validate --strict --kubernetes-version 1.30.0 "${manifests[@]}"
kubernetes-validate --strict "${manifests[@]}"
shellcheck .ci/run deploy/check.sh deploy/sbom.sh dev.sh deploy/systemd/sluice-env

bin="${SLUICE_BIN:-${CARGO_TARGET_DIR:-target}/debug/sluice}"
tmp="$(mktemp -d)"
pid=""
cleanup() {
  if [[ -n "$pid" ]]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

# The unit, with ExecStart pointed at the repository's wrapper (verify wants it to exist).
if command -v systemd-analyze >/dev/null 2>&1; then
  sed "s#/usr/local/libexec/sluice-env#$PWD/deploy/systemd/sluice-env#" \
    deploy/systemd/sluice.service > "$tmp/sluice.service"
  systemd-analyze verify "$tmp/sluice.service"
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
proxy="$(free_port)"; admin="$(free_port)"; metrics="$(free_port)"
cat > "$tmp/sluice.toml" <<TOML
[listen]
proxy = "127.0.0.1:$proxy"
admin = "127.0.0.1:$admin"
metrics = "127.0.0.1:$metrics"
[store]
path = "$tmp/data/sluice.db"
[[upstreams]]
name = "local"
region = "us"
base_url = "http://127.0.0.1:$(free_port)"
TOML
SLUICE_SECRETS_KEY="$(head -c 32 /dev/urandom | base64)"
export SLUICE_SECRETS_KEY SLUICE_CONFIG="$tmp/sluice.toml"
"$bin" orgs create metrics-check >/dev/null
"$bin" serve 2>"$tmp/sluice.log" &
pid=$!
for _ in $(seq 1 100); do
  if "$bin" healthcheck --ready 2>/dev/null; then break; fi
  sleep 0.1
done
"$bin" healthcheck --ready
# One refused request so that labelled series exist.
python3 - "$proxy" "$metrics" > "$tmp/metrics.txt" <<'PY'
import sys, urllib.request, urllib.error
proxy, metrics = sys.argv[1], sys.argv[2]
try:
    urllib.request.urlopen(f"http://127.0.0.1:{proxy}/v1/models", timeout=5)
except urllib.error.HTTPError:
    pass
sys.stdout.write(urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5).read().decode())
PY
promtool check metrics < "$tmp/metrics.txt"
echo "deploy checks: ok"
