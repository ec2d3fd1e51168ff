# Shared by scripts/test and scripts/up: Debian packages, the Python venv
# (a real ZenML server and pytest), and the build.  Source it; it sets
# ROOT (the repository) and cds there.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

ZENML_PIN="zenml[server]==0.98.0"
ZENML_VERSION=0.98.0
VENV="$ROOT/.venv"

DEB_PACKAGES=(meson ninja-build pkg-config gcc libfuse3-dev fuse3
	libcurl4-openssl-dev libsodium-dev libjansson-dev python3-venv
	util-linux curl ca-certificates)
# A style check runs when the tree has a .clang-format.
[ -f "$ROOT/.clang-format" ] && DEB_PACKAGES+=(clang-format)

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
	if [ "$(id -u)" = 0 ]; then
		"$@"
	elif command -v sudo >/dev/null; then
		sudo "$@"
	else
		die "need root for: $* (no sudo)"
	fi
}

# Install the Debian packages that are missing (apt-get update first);
# nothing to do, no network needed.
ensure_packages() {
	local missing=() p
	for p in "${DEB_PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
			grep -q 'install ok installed' || missing+=("$p")
	done
	if [ ${#missing[@]} -eq 0 ]; then
		say "debian packages: all present"
		return
	fi
	say "installing: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	as_root apt-get update -q
	as_root apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# The git-ignored venv with the pinned ZenML server, pytest and requests;
# pip runs only when something is missing.
ensure_venv() {
	if [ ! -x "$VENV/bin/python" ]; then
		say "creating $VENV"
		python3 -m venv "$VENV"
	fi
	if "$VENV/bin/python" - "$ZENML_VERSION" <<'PY' 2>/dev/null
import sys
import zenml, pytest, requests, uvicorn  # noqa: F401
sys.exit(zenml.__version__ != sys.argv[1])
PY
	then
		say "venv: $ZENML_PIN present"
		return
	fi
	say "pip install $ZENML_PIN pytest requests"
	"$VENV/bin/python" -m pip install -q --upgrade pip
	"$VENV/bin/python" -m pip install -q "$ZENML_PIN" pytest requests
}

# meson setup (or reconfigure) with -Dwerror=true, then compile.
build() {
	say "building"
	if [ -f build/build.ninja ]; then
		meson configure build -Dwerror=true >/dev/null
	else
		meson setup build -Dwerror=true
	fi
	meson compile -C build
}

ensure_fuse() {
	[ -e /dev/fuse ] || as_root modprobe fuse 2>/dev/null || true
	[ -e /dev/fuse ] || die "/dev/fuse missing: this machine cannot mount FUSE"
}
