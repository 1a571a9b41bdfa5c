#!/usr/bin/env bash
# The SBOM of the release binary's dependencies (CycloneDX 1.5 JSON, no dev or build-only
# dependencies) at target/sbom/sluice.cdx.json, checked: every component named, versioned,
# with a package URL and a license. Needs cargo-cyclonedx (cargo install --locked cargo-cyclonedx).
set -euo pipefail
cd "$(dirname "$0")/.."

out="${CARGO_TARGET_DIR:-target}/sbom"
mkdir -p "$out"
cargo cyclonedx --format json --spec-version 1.5 --no-build-deps >/dev/null
mv sluice.cdx.json "$out/sluice.cdx.json"
python3 - "$out/sluice.cdx.json" <<'PY'
import json, sys
bom = json.load(open(sys.argv[1]))
assert bom["bomFormat"] == "CycloneDX" and bom["specVersion"] == "1.5", "not a CycloneDX 1.5 document"
assert bom["metadata"]["component"]["name"] == "sluice"
components = bom["components"]
names = {c["name"] for c in components}
for needed in ("pingora-core", "rustls", "rusqlite", "aes-gcm"):
    assert needed in names, f"{needed} is missing from the SBOM"
for dev_only in ("proptest", "criterion", "rcgen"):
    assert dev_only not in names, f"{dev_only} (a dev dependency) is in the SBOM"
bad = [c["name"] for c in components
       if not c.get("version") or not c.get("purl") or not c.get("licenses")]
assert not bad, f"components without version, purl or license: {bad}"
print(f"sbom: {len(components)} components, {sys.argv[1]}")
PY
