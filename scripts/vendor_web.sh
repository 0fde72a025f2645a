#!/usr/bin/env bash
# Copies the web UI's third-party browser libraries (markdown, sanitiser, code highlighting, charts)
# from npm into src/datapilot/web/static/vendor/, so the UI never loads anything from a CDN.
#   scripts/vendor_web.sh          install when the pinned set changed (a stamp records it)
#   scripts/vendor_web.sh --force  install again
#   scripts/vendor_web.sh --check  exit 0 when the pinned set is installed, 1 otherwise
# Versions are pinned in src/datapilot/web/package.json and package-lock.json (`npm ci`).
set -euo pipefail
cd "$(dirname "$0")/.."

WEB=src/datapilot/web
DEST=$WEB/static/vendor
STAMP=$DEST/.stamp
want=$(cat "$WEB/package.json" "$WEB/package-lock.json" | sha256sum | cut -d' ' -f1)
if [[ "${1:-}" != "--force" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
  exit 0
fi
[[ "${1:-}" == "--check" ]] && exit 1
command -v npm >/dev/null 2>&1 || { echo "npm is missing: install Debian's nodejs and npm" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$WEB/package.json" "$WEB/package-lock.json" "$work/"
# --ignore-scripts: nothing from the registry runs here; we only copy prebuilt browser bundles.
(cd "$work" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error --engine-strict=false >/dev/null)

m=$work/node_modules
rm -rf "$DEST.new"
mkdir -p "$DEST.new/licenses"
copy() { cp "$m/$1" "$DEST.new/$2"; }
copy marked/lib/marked.umd.js marked.js
copy dompurify/dist/purify.min.js purify.js
copy @highlightjs/cdn-assets/highlight.min.js highlight.js
copy @highlightjs/cdn-assets/styles/github.min.css highlight-light.css
copy @highlightjs/cdn-assets/styles/github-dark.min.css highlight-dark.css
copy vega/build/vega.min.js vega.js
copy vega-lite/build/vega-lite.min.js vega-lite.js
copy vega-embed/build/vega-embed.min.js vega-embed.js
for pkg in marked dompurify @highlightjs/cdn-assets vega vega-lite vega-embed; do
  lic=$(find "$m/$pkg" -maxdepth 1 -iname 'LICENSE*' | head -1)
  name=${pkg#@}
  if [[ -n "$lic" ]]; then cp "$lic" "$DEST.new/licenses/${name//\//_}.txt"; fi
done
(cd "$work" && node -e '
  const lock = require("./package-lock.json").packages;
  const out = {};
  for (const name of Object.keys(require("./package.json").dependencies)) out[name] = lock["node_modules/" + name].version;
  console.log(JSON.stringify(out, null, 2));
') >"$DEST.new/versions.json"
echo "$want" >"$DEST.new/.stamp"
rm -rf "$DEST"
mv "$DEST.new" "$DEST"
