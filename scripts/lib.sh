# Shared by scripts/test and scripts/up: Debian packages, the Python venv
# (a real ZenML server and pytest), and the build.  Source it; it sets
# ROOT (the repository) and cds there.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# The ZenML server the tests run: the newest supported by default, any
# other with ZENMLFS_TEST_ZENML=0.80.0 (a venv of its own per version).
ZENML_NEWEST=0.98.0
ZENML_OLDEST=0.71.0 # the oldest supported (docs/zenmlfs.md, servers)
use_zenml() {
	ZENML_VERSION=$1
	ZENML_PIN="zenml[server]==$ZENML_VERSION"
	if [ "$ZENML_VERSION" = "$ZENML_NEWEST" ]; then
		VENV="$ROOT/.venv"
	else
		VENV="$ROOT/.venv-zenml-$ZENML_VERSION"
	fi
}
use_zenml "${ZENMLFS_TEST_ZENML:-$ZENML_NEWEST}"

DEB_PACKAGES=(meson ninja-build pkg-config gcc libfuse3-dev fuse3
	libcurl4-openssl-dev libsodium-dev libjansson-dev python3-venv
	util-linux curl ca-certificates)
# The man page (made from docs/zenmlfs.md) and what tests/test_system.py
# runs: man page lint, systemd-analyze verify (the unit runs /bin/kill),
# mount(8).
DEB_PACKAGES+=(go-md2man mandoc man-db groff-base systemd procps mount)
# The fuzz targets (libFuzzer: clang and its runtime, which Debian 12
# ships apart from clang), the style check, the core-dump test (gcore,
# from gdb).
DEB_PACKAGES+=(clang libclang-rt-14-dev clang-format gdb)
# tests/test_containers.py: sandboxes (bubblewrap, a busybox root file
# system), readelf for the Containerfile check.  PyYAML comes with zenml.
DEB_PACKAGES+=(bubblewrap busybox-static binutils)
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

# The git-ignored venv with the pinned ZenML server, pytest (and
# pytest-xdist: scripts/test runs each suite as two workers) and requests;
# pip runs only when something is missing.
ensure_venv() {
	if [ ! -x "$VENV/bin/python" ]; then
		say "creating $VENV"
		python3 -m venv "$VENV"
	fi
	if "$VENV/bin/python" - "$ZENML_VERSION" <<'PY' 2>/dev/null
import sys
import zenml, pytest, xdist, requests, uvicorn, prometheus_client  # noqa: F401
sys.exit(zenml.__version__ != sys.argv[1])
PY
	then
		say "venv: $ZENML_PIN present"
		return
	fi
	say "pip install $ZENML_PIN pytest pytest-xdist requests prometheus_client"
	"$VENV/bin/python" -m pip install -q --upgrade pip
	"$VENV/bin/python" -m pip install -q "$ZENML_PIN" pytest pytest-xdist \
		requests prometheus_client
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

# Run "$@" with its output shown only if it fails (ninja prints a compile
# error on standard output).
quiet() {
	local out rc=0
	out=$("$@" 2>&1) || rc=$?
	[ "$rc" = 0 ] || printf '%s\n' "$out" >&2
	return "$rc"
}

# The ASan+UBSan build of the daemon, in build-asan/.
build_asan() {
	say "building build-asan (address, undefined)"
	if [ ! -f build-asan/build.ninja ]; then
		meson setup build-asan -Db_sanitize=address,undefined \
			-Db_lundef=false >/dev/null
	fi
	quiet meson compile -C build-asan
}

# A sanitizer report, a leak included, makes the daemon exit non-zero,
# which every mount's teardown checks.
asan_env() {
	export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
	export LSAN_OPTIONS="suppressions=$ROOT/tests/lsan.supp:print_suppressions=0"
	export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
}

# The libFuzzer targets (clang), in build-fuzz/.
build_fuzz() {
	say "building build-fuzz (libFuzzer targets)"
	if [ ! -f build-fuzz/build.ninja ]; then
		CC=clang meson setup build-fuzz -Dfuzz=true >/dev/null
	fi
	quiet meson compile -C build-fuzz
}

# Each fuzz target for $1 seconds from its seed corpus (two at a time);
# a crash or a violated postcondition fails.
run_fuzzers() {
	local secs=$1 t dir pids=() names=() rc=0 i
	for t in build-fuzz/tests/fuzz_*; do
		[ -f "$t" ] && [ -x "$t" ] || continue
		dir="tests/fuzz/seeds/${t##*/fuzz_}"
		mkdir -p "build-fuzz/corpus-${t##*/fuzz_}"
		"$t" -max_total_time="$secs" -print_final_stats=0 \
			"build-fuzz/corpus-${t##*/fuzz_}" "$dir" \
			>"build-fuzz/${t##*/}.log" 2>&1 &
		pids+=($!)
		names+=("${t##*/}")
		if [ ${#pids[@]} -ge 2 ]; then
			for i in "${!pids[@]}"; do
				wait "${pids[$i]}" ||
					{ rc=1; tail -20 "build-fuzz/${names[$i]}.log"; }
			done
			pids=()
			names=()
		fi
	done
	for i in "${!pids[@]}"; do
		wait "${pids[$i]}" ||
			{ rc=1; tail -20 "build-fuzz/${names[$i]}.log"; }
	done
	[ $rc = 0 ] || die "a fuzz target failed"
}
