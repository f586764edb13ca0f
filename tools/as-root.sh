# tools/as-root.sh — sourced first thing by the scripts that need root (tools/demo.sh, tools/test.sh):
#   . "$(dirname "$0")/as-root.sh"
# As root it does nothing, so the README's commands work on a machine that has only root and no sudo.
# Otherwise it runs the script again under sudo when sudo is installed, keeping the environment and PATH
# (so that the caller's cargo and rustup are found), or stops with a message saying what to do.
if [ "$(id -u)" != 0 ]; then
  if command -v sudo > /dev/null 2>&1; then
    echo "$(basename "$0"): needs root; running it again with sudo" >&2
    exec sudo -E env PATH="$PATH" CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}" RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}" \
      bash "$0" "$@"
  fi
  echo "$(basename "$0"): needs root (it installs Debian packages and starts libvirtd), and sudo is not installed: run it as root" >&2
  exit 1
fi
