#!/usr/bin/env bash
# Re-vendor the GraphiQL page's browser assets into gateway/static/graphiql/.
#
# The gateway serves GraphiQL itself (no CDN), so it works air-gapped. This script fetches the
# pinned npm packages with `npm pack`, checks each tarball against its pinned sha512 integrity
# (the registry's `dist.integrity`), copies out only the files the page loads plus the licenses,
# writes VENDORED.txt (what came from where, with sha256 of every file), and rewrites the
# `?v=<hash>` cache-busting suffixes in gateway/static/graphiql.html to the new content hashes
# (the assets are served with a one-year immutable Cache-Control when `v` is given).
#
# Needs: npm (registry access), tar, python3. Usage: scripts/vendor-graphiql.sh
# To upgrade: change a version below, set its integrity to `npm view PKG@VER dist.integrity`,
# re-run, then run tests/test_graphiql.py.
set -euo pipefail

REACT_VERSION=18.2.0
REACT_INTEGRITY='sha512-/3IjMdb2L9QbBdWiW5e3P2/npwMBaU9mHCSCUzNln0ZCYbcfTsGbTJrU/kGemdH2IWmB2ioZ+zkxtmq6g09fGQ=='
REACT_DOM_VERSION=18.2.0
REACT_DOM_INTEGRITY='sha512-6IMTriUmvsjHUjNtEDudZfuDQUoWXVxKHhlEGSk81n4YFS+r/Kl99wXiwlVXtPBtJenozv2P+hxDsw9eA7Xo6g=='
GRAPHIQL_VERSION=3.8.3
GRAPHIQL_INTEGRITY='sha512-cuPDYtXVKV86Pu5PHBX642Odi/uVEE2y1Jxq5rGO/Qy1G2lRp7ZZ7a/T30RzxhuLSWo9zUbzq0P3U49//H0Ugw=='

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/gateway/static/graphiql"
HTML="$ROOT/gateway/static/graphiql.html"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# fetch NAME VERSION INTEGRITY -> extracts the package into $WORK/NAME
fetch() {
    local name=$1 version=$2 integrity=$3 tarball actual
    tarball="$(cd "$WORK" && npm pack --silent "$name@$version" 2>/dev/null | tail -n 1)"
    actual="sha512-$(openssl dgst -sha512 -binary "$WORK/$tarball" | base64 | tr -d '\n')"
    if [[ "$actual" != "$integrity" ]]; then
        echo "integrity mismatch for $name@$version: got $actual" >&2
        exit 1
    fi
    mkdir -p "$WORK/$name"
    tar -xzf "$WORK/$tarball" -C "$WORK/$name" --strip-components=1
}

fetch react "$REACT_VERSION" "$REACT_INTEGRITY"
fetch react-dom "$REACT_DOM_VERSION" "$REACT_DOM_INTEGRITY"
fetch graphiql "$GRAPHIQL_VERSION" "$GRAPHIQL_INTEGRITY"

rm -rf "$DEST"
mkdir -p "$DEST"
# Byte-identical copies (their trailing sourceMappingURL comments point at .map files that are
# deliberately not vendored: browsers only ask for them with devtools open, and get a 404).
install -m 0644 "$WORK/react/umd/react.production.min.js" "$DEST/"
install -m 0644 "$WORK/react-dom/umd/react-dom.production.min.js" "$DEST/"
install -m 0644 "$WORK/graphiql/graphiql.min.js" "$DEST/"
install -m 0644 "$WORK/graphiql/graphiql.min.css" "$DEST/"
install -m 0644 "$WORK/react/LICENSE" "$DEST/LICENSE.react.txt"
install -m 0644 "$WORK/react-dom/LICENSE" "$DEST/LICENSE.react-dom.txt"
install -m 0644 "$WORK/graphiql/LICENSE" "$DEST/LICENSE.graphiql.txt"

{
    echo "Vendored by scripts/vendor-graphiql.sh from the npm registry; do not edit by hand."
    echo
    echo "react@$REACT_VERSION $REACT_INTEGRITY"
    echo "  umd/react.production.min.js -> react.production.min.js"
    echo "  LICENSE -> LICENSE.react.txt"
    echo "react-dom@$REACT_DOM_VERSION $REACT_DOM_INTEGRITY"
    echo "  umd/react-dom.production.min.js -> react-dom.production.min.js"
    echo "  LICENSE -> LICENSE.react-dom.txt"
    echo "graphiql@$GRAPHIQL_VERSION $GRAPHIQL_INTEGRITY"
    echo "  graphiql.min.js -> graphiql.min.js (bundles its dependencies, graphql-ws included)"
    echo "  graphiql.min.css -> graphiql.min.css"
    echo "  LICENSE -> LICENSE.graphiql.txt"
    echo
    echo "sha256:"
    (cd "$DEST" && sha256sum -- *.js *.css LICENSE.*.txt | sed 's/^/  /')
} > "$DEST/VENDORED.txt"

# Point the page's asset URLs at the new content: /graphiql/NAME?v=<first 12 hex of sha256>.
python3 - "$DEST" "$HTML" <<'PY'
import hashlib
import pathlib
import re
import sys

dest, html_path = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
html = html_path.read_text("utf-8")


def versioned(match: re.Match[str]) -> str:
    name = match.group(1)
    digest = hashlib.sha256((dest / name).read_bytes()).hexdigest()[:12]
    return f"/graphiql/{name}?v={digest}"


new = re.sub(r"/graphiql/([A-Za-z0-9._-]+\.(?:js|css))(?:\?v=[0-9a-f]*)?", versioned, html)
html_path.write_text(new, "utf-8")
PY

du -ch "$DEST"/* | sed 's/^/  /'
echo "vendored into $DEST and updated $HTML"
