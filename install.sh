#!/usr/bin/env bash
# Build talos-pve from this checkout and install it into ${PREFIX:-$HOME/.local}/bin.
# Idempotent: re-running rebuilds (incrementally) and replaces the binary atomically,
# so a failed run never leaves a half-written talos-pve behind.
set -euo pipefail

die() {
  echo "install.sh: $*" >&2
  exit 1
}

cd "$(dirname "${BASH_SOURCE[0]}")"

command -v cargo >/dev/null 2>&1 ||
  die "cargo not found. Install Rust (>= 1.89) from https://rustup.rs or your distribution's cargo package, then re-run ./install.sh"

prefix="${PREFIX:-$HOME/.local}"
bindir="$prefix/bin"
target_dir="${CARGO_TARGET_DIR:-target}"
built="$target_dir/release/talos-pve"

echo "==> building talos-pve (cargo build --release --locked)"
cargo build --release --locked || die "the build failed; nothing was installed"
[[ -x "$built" ]] || die "the build did not produce $built; nothing was installed"
"$built" --version >/dev/null || die "$built does not run on this machine; nothing was installed"

mkdir -p "$bindir" || die "cannot create $bindir (set PREFIX to a writable directory)"
# Stage next to the destination so the final mv is a same-filesystem rename.
tmp="$(mktemp "$bindir/.talos-pve.XXXXXX")" || die "cannot write to $bindir"
trap 'rm -f "$tmp"' EXIT
cp "$built" "$tmp"
chmod 0755 "$tmp"
mv -f "$tmp" "$bindir/talos-pve"
trap - EXIT

echo "==> installed $("$bindir/talos-pve" --version) to $bindir/talos-pve"
mandir="$prefix/share/man/man1"
"$bindir/talos-pve" man --out "$mandir" || die "cannot write the man pages into $mandir"
case ":${PATH}:" in
  *":$bindir:"*) ;;
  *)
    echo "warning: $bindir is not on your PATH; add it, e.g.:" >&2
    echo "  echo 'export PATH=\"$bindir:\$PATH\"' >> ~/.bashrc" >&2
    ;;
esac
cat <<MSG
Shell completions:
  bash: talos-pve completions bash > ~/.local/share/bash-completion/completions/talos-pve
  zsh:  talos-pve completions zsh > "\${fpath[1]}/_talos-pve"
  fish: talos-pve completions fish > ~/.config/fish/completions/talos-pve.fish
MSG
