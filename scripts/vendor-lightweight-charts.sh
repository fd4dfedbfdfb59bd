#!/usr/bin/env bash
# Re-vendor the dashboard's chart library into gateway/static/dashboard/.
#
# The dashboard (`GET /`) draws its candle chart with TradingView Lightweight Charts, served by
# the gateway itself (no CDN, no Node toolchain at install time: the file is committed). This
# script fetches the pinned npm package with `npm pack`, checks the tarball against its pinned
# sha512 integrity (the registry's `dist.integrity`), copies out the standalone production ES
# module (it bundles its one dependency, fancy-canvas) and the license, and writes
# VENDORED.lightweight-charts.txt (name, version, integrity, sha256 of each file), which
# tests/api/test_dashboard.py checks against the committed files.
#
# Needs: npm (registry access), tar, openssl, sha256sum. Usage: scripts/vendor-lightweight-charts.sh
# To upgrade: change the version, set the integrity to `npm view lightweight-charts@VER
# dist.integrity`, re-run, then run tests/api/test_dashboard.py.
set -euo pipefail

VERSION=5.2.1
INTEGRITY='sha512-IVwoK1RLFiLPubaKIjNbtjWLnpPMqiABSrTay6whmNa8L1+19292VtHJ+BWyPUuLCwF0tcQlhEWd1CLB2a1nsQ=='
FILE=lightweight-charts.standalone.production.mjs

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/gateway/static/dashboard"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

tarball="$(cd "$WORK" && npm pack --silent "lightweight-charts@$VERSION" 2>/dev/null | tail -n 1)"
actual="sha512-$(openssl dgst -sha512 -binary "$WORK/$tarball" | base64 | tr -d '\n')"
if [[ "$actual" != "$INTEGRITY" ]]; then
    echo "integrity mismatch for lightweight-charts@$VERSION: got $actual" >&2
    exit 1
fi
mkdir -p "$WORK/pkg"
tar -xzf "$WORK/$tarball" -C "$WORK/pkg" --strip-components=1
install -m 0644 "$WORK/pkg/dist/$FILE" "$DEST/$FILE"
install -m 0644 "$WORK/pkg/LICENSE" "$DEST/LICENSE.lightweight-charts.txt"

{
    echo "Vendored by scripts/vendor-lightweight-charts.sh from the npm registry; do not edit by hand."
    echo
    echo "name: lightweight-charts"
    echo "version: $VERSION"
    echo "integrity: $INTEGRITY"
    echo "  dist/$FILE -> $FILE"
    echo "  LICENSE -> LICENSE.lightweight-charts.txt (Apache-2.0)"
    echo
    echo "sha256:"
    (cd "$DEST" && sha256sum "$FILE" LICENSE.lightweight-charts.txt | sed 's/^/  /')
} > "$DEST/VENDORED.lightweight-charts.txt"
echo "vendored lightweight-charts@$VERSION into $DEST"
