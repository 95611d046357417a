#!/usr/bin/env bash
# fresh_machine.sh — proves the README's two commands work on a fresh Debian machine.
#
#   sudo tools/fresh_machine.sh [--worktree] [--keep] [ROOT]      (not part of `make test`)
#
# 1. Builds a minimal Debian bookworm root with debootstrap (variant minbase) from the Debian mirror
#    this machine's apt already uses (read from /etc/apt/sources.list*; no host name lives here),
#    plus what a new machine of this project is documented to have: gcc, make, cmake. Nothing else:
#    no git, no curl, no ca-certificates, no Node.js, no Python. The host's own extra CA certificates
#    (/usr/local/share/ca-certificates, e.g. a TLS-inspecting proxy's) are copied in, nothing more.
# 2. Copies the repository in: `git archive HEAD` (default: what a fresh clone gets), or with
#    --worktree the working tree's tracked and untracked-but-not-ignored files (never build/, var/,
#    third_party/).
# 3. Inside a chroot with /proc, /sys, /dev mounted and the host's resolver (apt and npm need the
#    network), as root in /src: `make test`, then `make run` in the background until
#    /v2/health/ready answers 200 (deadline FRESH_READY_S, 600 s), then stops it.
# Every phase is timed; the log is ROOT.log. ROOT (default /var/tmp/ortserve-fresh) is deleted
# first and, unless --keep, afterwards. Needs root and debootstrap. Exit status 0 = both worked.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
mode=head keep=0 root=/var/tmp/ortserve-fresh
while [ $# -gt 0 ]; do
    case "$1" in
    --worktree) mode=worktree ;;
    --keep) keep=1 ;;
    -h | --help) sed -n '2,18p' "$0"; exit 0 ;;
    -*) echo "fresh_machine: unknown option $1" >&2; exit 2 ;;
    *) root=$1 ;;
    esac
    shift
done
root=$(realpath -m "$root") # /proc/PID/root reads back canonical
ready_s=${FRESH_READY_S:-600}
port=${FRESH_PORT:-}
log="$root.log"

[ "$(id -u)" = 0 ] || { echo "fresh_machine: needs root (debootstrap, chroot, mounts)" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "fresh_machine: apt-get install debootstrap" >&2; exit 1; }
case "$root" in /|/usr|/var|/tmp|/home|"$here"*) echo "fresh_machine: refusing ROOT=$root" >&2; exit 2 ;; esac

# --- The Debian mirror this machine uses (one-line and deb822 formats) --------------------------
mirror_for() { # $1 = suite; prints the first URI that serves it with component main
    local suite=$1 f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -r "$f" ] || continue
        awk -v s="$suite" '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
             if ($(i + 1) == s) for (j = i + 2; j <= NF; j++) if ($j == "main") { print $i; exit } }' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        awk -v s="$suite" 'function flush() { if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " s " ") &&
                                            (" " comps " ") ~ / main /) { split(uris, u, " "); print u[1]; exit }
                               types = uris = suites = comps = "" }
             /^[ \t]*$/ { flush(); next }
             /^Types:/ { sub(/^Types:[ \t]*/, ""); types = $0 }
             /^URIs:/ { sub(/^URIs:[ \t]*/, ""); uris = $0 }
             /^Suites:/ { sub(/^Suites:[ \t]*/, ""); suites = $0 }
             /^Components:/ { sub(/^Components:[ \t]*/, ""); comps = $0 }
             END { flush() }' "$f"
    done
}
mirror=$(mirror_for bookworm | head -n1)
security=$(mirror_for bookworm-security | head -n1)
[ -n "$mirror" ] || { echo "fresh_machine: no bookworm 'main' source in /etc/apt/sources.list*" >&2; exit 1; }

# --- Clean-up: end what still runs inside the root, unmount, delete the root unless --keep --------
mounted=()
in_root_pids() { # every process whose root directory is ours: we started all of them
    local d
    for d in /proc/[0-9]*; do
        [ "$(readlink "$d/root" 2>/dev/null)" = "$root" ] && echo "${d#/proc/}"
    done
    return 0
}
cleanup() {
    local i pids
    pids=$(in_root_pids)
    if [ -n "$pids" ]; then
        kill -TERM $pids 2>/dev/null || true
        sleep 2
        pids=$(in_root_pids)
        [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
    fi
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[i]}" 2>/dev/null || true; done
    if [ "$keep" = 0 ] && [ -d "$root" ]; then rm -rf --one-file-system "$root"; fi
}
trap cleanup EXIT
mnt() { mount "$@"; mounted+=("${!#}"); }

t0=$(date +%s)
phase() { echo "=== $(date -u +%H:%M:%S) [+$(($(date +%s) - t0)) s] $*" | tee -a "$log"; }
: >"$log"
phase "fresh machine: mirror $mirror${security:+, security $security}; repository: $mode; root $root"

# --- 1. The root ---------------------------------------------------------------------------------
rm -rf --one-file-system "$root"
mkdir -p "$root"
phase "debootstrap (minbase + gcc make cmake)"
debootstrap --variant=minbase --include=gcc,make,cmake bookworm "$root" "$mirror" >>"$log" 2>&1
{
    echo "deb $mirror bookworm main"
    echo "deb $mirror bookworm-updates main"
    [ -z "$security" ] || echo "deb $security bookworm-security main"
} >"$root/etc/apt/sources.list"
cp -L /etc/resolv.conf "$root/etc/resolv.conf"
# Trust what this machine trusts beyond Debian's CA list (a network that inspects TLS has its own
# CA in /usr/local/share/ca-certificates): picked up when the ca-certificates package is installed.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    mkdir -p "$root/usr/local/share/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    [ ! -x "$root/usr/sbin/update-ca-certificates" ] || chroot "$root" /usr/sbin/update-ca-certificates >>"$log" 2>&1
fi
echo "fresh" >"$root/etc/hostname"
phase "root ready: $(du -sh --one-file-system "$root" | cut -f1)"

# --- 2. The repository ---------------------------------------------------------------------------
mkdir -p "$root/src"
if [ "$mode" = head ]; then
    git -C "$here" archive --format=tar HEAD | tar -x -C "$root/src"
    phase "copied git archive HEAD ($(git -C "$here" rev-parse --short HEAD))"
else
    (cd "$here" && git ls-files -z -co --exclude-standard | grep -zv -E '^(build|var|third_party)/' |
        xargs -0 -r sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh |
        tar --null -T - -cf -) | tar -x -C "$root/src"
    phase "copied the working tree (tracked + untracked, not ignored)"
fi

# --- 3. The README's two commands ----------------------------------------------------------------
mnt -t proc proc "$root/proc"
mnt -t sysfs sysfs "$root/sys"
mnt --bind /dev "$root/dev"
mnt -t devpts devpts "$root/dev/pts" -o newinstance,ptmxmode=0666
mnt -t tmpfs tmpfs "$root/dev/shm"
in_root=(chroot "$root" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)

phase "make test"
set +e
"${in_root[@]}" /bin/bash -c 'cd /src && make test' >>"$log" 2>&1
test_rc=$?
set -e
phase "make test exit status $test_rc: $(grep -E 'tests passed|tests failed' "$log" | tr '\n' ';')"

probe() { # no curl, no python on the host side needed: bash's /dev/tcp
    exec 3<>"/dev/tcp/127.0.0.1/$port" || return 1
    printf 'GET /v2/health/ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' >&3
    head -n1 <&3 | grep -q ' 200 '
    local rc=$?
    exec 3<&-
    return $rc
}
# The chroot shares the host's network: take a port nothing answers on, so the probe can only
# reach the server started here.
if [ -z "$port" ]; then
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        port=$((20000 + RANDOM % 20000))
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || break
    done
fi
phase "make run (background), waiting for /v2/health/ready on 127.0.0.1:$port"
# A simple command in the background: its PID is chroot's, which env, bash and setsid exec into, so
# it ends up as `make run`, leading a new process group (no job control here: setsid need not fork).
"${in_root[@]}" /bin/bash -c "cd /src && exec setsid make run PORT=$port" >>"$log.run" 2>&1 &
run_pid=$!
run_rc=1
deadline=$(($(date +%s) + ready_s))
while [ "$(date +%s)" -lt "$deadline" ]; do
    if ! kill -0 "$run_pid" 2>/dev/null; then break; fi
    if probe 2>/dev/null; then run_rc=0; break; fi
    sleep 1
done
phase "make run: $([ $run_rc = 0 ] && echo ready || echo 'NOT ready')"
# Stop it: end exactly that process group (make and the server), then check nothing is left.
kill -TERM -- "-$run_pid" 2>/dev/null || kill -TERM "$run_pid" 2>/dev/null || true
wait "$run_pid" 2>/dev/null || true
for _ in 1 2 3 4 5 6 7 8 9 10; do [ -z "$(in_root_pids)" ] && break; sleep 1; done
left=$(in_root_pids)
[ -z "$left" ] || { phase "still running in the root after stopping: $left"; run_rc=1; }
sed 's/^/  run| /' "$log.run" | tail -n 20 >>"$log"
rm -f "$log.run"

phase "done: make test $([ $test_rc = 0 ] && echo passed || echo "FAILED ($test_rc)"), make run $([ $run_rc = 0 ] && echo ready || echo FAILED)"
[ $test_rc = 0 ] && [ $run_rc = 0 ]
