# Shared by the install scripts (sourced, not run): each installs one thing
# from Debian's packages when it is missing.

# become_root re-runs the calling script as root through sudo when it can,
# or says what to run and fails. what names the thing, hint the command.
become_root() {
  local what=$1 hint=$2
  shift 2
  [ "$(id -u)" -eq 0 ] && return 0
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    exec sudo -n "$0" "$@"
  fi
  echo "$what is missing. Install it as root: $hint" >&2
  exit 1
}

# apt_install installs packages quietly, refreshing the lists first.
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "$@" >/dev/null
}
