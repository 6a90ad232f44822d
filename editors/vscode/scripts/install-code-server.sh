#!/usr/bin/env bash
# Install code-server 4.100.3 (a real VS Code 1.100 served to a browser) and Debian's chromium,
# for the end-to-end test of the VS Code extension. Idempotent: a second run only checks.
#
#   editors/vscode/scripts/install-code-server.sh [CACHE_DIR]
#
# CACHE_DIR defaults to $LSP_DBCODE_CODE_SERVER_DIR, else ~/.cache/lsp-dbcode-code-server.
# Prints the code-server binary's path on its last line.
#
# code-server 4.100.3 is the newest release that runs on Node 20. Installing it offline (only
# the npm and Debian registries reachable) needs four fixes (see shared FIELD-NOTES):
#   1. kerberos builds from source: apt-get install libkrb5-dev;
#   2. @vscode/ripgrep downloads rg from GitHub in its postinstall: pre-seed its download cache
#      with Debian's rg, packed the way it expects;
#   3. npm_config_unsafe_perm=true (root runs the install scripts);
#   4. npm_config_yes=true (node-pty's postinstall runs npx);
#   5. npm_config_nodedir=/usr: argon2's prebuilt binary cannot be downloaded, so it builds from
#      source, and node-gyp would fetch Node's headers from the web unless pointed at the
#      installed ones (/usr/include/node, from Debian's nodejs). A machine that kept an earlier
#      install in its cache hides this; .ci/run installs into a cache of its own run.
set -euo pipefail

VERSION=4.100.3
RG_PKG_VERSION=1.15.11
RG_ASSET=ripgrep-v13.0.0-10-x86_64-unknown-linux-musl.tar.gz
DIR="${1:-${LSP_DBCODE_CODE_SERVER_DIR:-$HOME/.cache/lsp-dbcode-code-server}}"
BIN="$DIR/node_modules/.bin/code-server"
MARKER="$DIR/.installed-$VERSION"

log() { echo "install-code-server: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# -- Debian packages: chromium (the test's browser), libkrb5-dev, ripgrep ----------------------
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v rg >/dev/null || missing+=(ripgrep)
dpkg -s libkrb5-dev >/dev/null 2>&1 || missing+=(libkrb5-dev)
if ((${#missing[@]})); then
    [ "$(id -u)" = 0 ] || die "need root to apt-get install ${missing[*]}"
    log "apt-get install ${missing[*]}"
    apt-get update -q >&2 || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2 \
        || die "apt-get install ${missing[*]} failed"
fi

command -v node >/dev/null || die "node is not installed (code-server $VERSION needs Node 20)"
# Fix 5: the headers node-gyp builds argon2 against, from the installed Node (never the web).
NODEDIR="${npm_config_nodedir:-$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")}"
[ -f "$NODEDIR/include/node/node.h" ] \
    || die "Node's headers are missing ($NODEDIR/include/node/node.h): install Debian's nodejs \
(or set npm_config_nodedir to a Node install that has include/node)"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$node_major" = 20 ] || log "warning: Node $node_major found; code-server $VERSION wants Node 20"

# -- code-server ---------------------------------------------------------------------------
if [ -f "$MARKER" ] && [ -x "$BIN" ] && "$BIN" --version >/dev/null 2>&1; then
    echo "$BIN"
    exit 0
fi

log "installing code-server $VERSION into $DIR (takes about a minute and a half)"
mkdir -p "$DIR"
rm -f "$MARKER"
TMPDIR="$DIR/tmp"
export TMPDIR
mkdir -p "$TMPDIR"

# Fix 2: @vscode/ripgrep's postinstall looks for its download in
# $TMPDIR/vscode-ripgrep-cache-<its version>/<asset>; give it Debian's rg.
cache="$TMPDIR/vscode-ripgrep-cache-$RG_PKG_VERSION"
if [ ! -s "$cache/$RG_ASSET" ]; then
    mkdir -p "$cache/pack"
    cp "$(command -v rg)" "$cache/pack/rg"
    tar -C "$cache/pack" -czf "$cache/$RG_ASSET" rg
    rm -rf "$cache/pack"
fi

[ -f "$DIR/package.json" ] || echo '{"name": "lsp-dbcode-code-server", "private": true}' \
    > "$DIR/package.json"
(
    cd "$DIR"
    export npm_config_unsafe_perm=true npm_config_yes=true npm_config_nodedir="$NODEDIR"
    export npm_config_fund=false npm_config_audit=false npm_config_update_notifier=false
    npm install --save-exact "code-server@$VERSION" >&2
) || die "npm install code-server@$VERSION failed (see above)"

"$BIN" --version >/dev/null 2>&1 || die "code-server installed but does not run: $BIN --version"
touch "$MARKER"
log "done: $("$BIN" --version | head -1)"
echo "$BIN"
