#!/usr/bin/env bash
# container_check.sh — builds ortserve's container image from the Dockerfile with a real engine
# (podman, or docker) and checks the running container from outside it (docs/DEPLOY.md, "The image,
# built and run"). `make container-test` runs `all`; tests/e2e/test_container.py runs `check` when an
# engine and the image are present.
#
#   tools/container_check.sh base            make the base images the Dockerfile names
#                                            (debian:bookworm, debian:bookworm-slim) from a debootstrap
#                                            minbase root, tagged localhost/..., when none is present
#                                            (machines that reach no image registry)
#   tools/container_check.sh build [IMAGE]   build the Dockerfile (docker format: OCI images drop the
#                                            HEALTHCHECK), passing the machine's extra CA certificates as
#                                            the build secret `extra-ca` (a TLS-inspecting proxy)
#   tools/container_check.sh check [IMAGE]   run IMAGE under a memory limit and check it: it serves the
#                                            demo models (metadata, infer, classify), its HEALTHCHECK
#                                            passes, ortserve runs as uid 10001, stays under the limit,
#                                            and SIGTERM stops it with exit 0 within the drain timeout;
#                                            prints the figures as `figure NAME VALUE` lines
#   tools/container_check.sh size [IMAGE]    the image's size, uncompressed and as `save | gzip`
#   tools/container_check.sh [all] [IMAGE]   base, build, check, size
#
# IMAGE defaults to localhost/ortserve:<version in CMakeLists.txt>. Environment:
#   ENGINE        podman (default) or docker
#   MEMORY        the container's memory limit for `check` (default 512m)
#   DEBIAN_MIRROR the mirror debootstrap uses (default: the first URI of the host's apt sources)
#   EXTRA_CA      PEM file(s) handed to the build as the secret `extra-ca` (default: the certificates
#                 in /usr/local/share/ca-certificates); EXTRA_CA= passes none
#   WORK          scratch directory (default build/container)
# The container shares the host's network (`--network host`: no bridge or port mapping needed on
# the machines this was measured on) and listens on 127.0.0.1 at a free port given by ORTSERVE_PORT,
# which the HEALTHCHECK follows.
set -euo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
ENGINE=${ENGINE:-podman}
MEMORY=${MEMORY:-512m}
WORK=${WORK:-$src/build/container}
IMAGE_UID=10001
version=$(sed -n 's/^project(ortserve VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")
default_image=localhost/ortserve:$version

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
    exit 2
}
say() { echo "container_check: $*" >&2; }
die() { say "$*"; exit 1; }
figure() { echo "figure $1 $2"; }
now_ms() { date +%s%3N; }

# podman on the cgroup v1 machines measured here needs runc (crun refuses their hybrid layout), and
# containers that inherit the engine's resource limits: its built-in defaults raise RLIMIT_NOFILE and
# RLIMIT_NPROC, which a container manager's own limits may forbid ("error setting rlimit"). Without a
# containers.conf of the machine's, one with just those settings is used (not written to /etc).
if [ "$ENGINE" = podman ] && [ -z "${CONTAINERS_CONF:-}" ] && [ ! -e /etc/containers/containers.conf ]; then
    mkdir -p "$WORK"
    printf '[containers]\ndefault_ulimits = []\n\n[engine]\ncgroup_manager = "cgroupfs"\n' \
        >"$WORK/containers.conf"
    export CONTAINERS_CONF=$WORK/containers.conf
fi

engine() {
    case $ENGINE in
    podman) podman --runtime "${PODMAN_RUNTIME:-runc}" "$@" ;;
    *) "$ENGINE" "$@" ;;
    esac
}

have_image() { engine image exists "$1" 2>/dev/null || engine image inspect "$1" >/dev/null 2>&1; }

# --- base images --------------------------------------------------------------------------------
mirror() {
    if [ -n "${DEBIAN_MIRROR:-}" ]; then
        echo "$DEBIAN_MIRROR"
        return
    fi
    local m
    m=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -1)
    [ -n "$m" ] || m=$(sed -n 's/^deb \(\[[^]]*\] \)\{0,1\}\([^ ]*\) bookworm .*/\2/p' /etc/apt/sources.list 2>/dev/null | head -1)
    [ -n "$m" ] || die "no Debian mirror found in the apt sources: set DEBIAN_MIRROR"
    echo "$m"
}

# What Debian's own slim images leave out (debuerreotype's --slim): documentation but the copyright
# files, man and info pages, translations. Installed as a dpkg configuration, so packages that the
# image's apt-get adds later are slimmed too.
slim_root() { # ROOT
    local root=$1
    cat >"$root/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/man/*
EOF
    find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
    find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
    rm -rf "$root"/usr/share/{info,linda,man}/* "$root"/usr/share/lintian/overrides/*
}

# A minbase root made the way Debian's official images are (debuerreotype): apt keeps no package
# lists or caches, no logs, no machine id.
base() {
    local tag root m
    command -v debootstrap >/dev/null || die "debootstrap is missing (tools/deps.sh container)"
    for tag in bookworm bookworm-slim; do
        if have_image "debian:$tag"; then
            say "debian:$tag is present"
            continue
        fi
        root=$WORK/rootfs-$tag
        m=$(mirror)
        rm -rf "$root"
        mkdir -p "$WORK"
        say "debootstrap --variant=minbase bookworm $root $m"
        debootstrap --variant=minbase bookworm "$root" "$m" >"$WORK/debootstrap-$tag.log" 2>&1 ||
            die "debootstrap failed: $WORK/debootstrap-$tag.log"
        cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
        echo 'Acquire::Languages "none";' >"$root/etc/apt/apt.conf.d/docker-no-languages"
        [ "$tag" = bookworm-slim ] && slim_root "$root"
        rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
        find "$root/var/log" -type f -delete
        : >"$root/etc/machine-id"
        tar --numeric-owner -C "$root" -c . | engine import - "localhost/debian:$tag" >/dev/null
        rm -rf "$root"
        say "imported localhost/debian:$tag"
    done
}

# --- build -------------------------------------------------------------------------------------
build() { # IMAGE
    local image=$1 ca=() t0
    local certs=${EXTRA_CA-/usr/local/share/ca-certificates/*.crt}
    mkdir -p "$WORK"
    # shellcheck disable=SC2086 # the default is a glob
    if [ -n "$certs" ] && ls $certs >/dev/null 2>&1; then
        cat $certs >"$WORK/extra-ca.pem"
        ca=(--secret "id=extra-ca,src=$WORK/extra-ca.pem")
    fi
    local fmt=()
    [ "$ENGINE" = podman ] && fmt=(--format docker)
    t0=$(now_ms)
    say "building $image (log: $WORK/build.log)"
    if ! engine build "${fmt[@]}" --network host "${ca[@]}" --label "org.opencontainers.image.revision=$(revision)" \
        -t "$image" "$src" >"$WORK/build.log" 2>&1; then
        rm -f "$WORK/extra-ca.pem"
        tail -30 "$WORK/build.log" >&2
        die "the build failed: $WORK/build.log"
    fi
    rm -f "$WORK/extra-ca.pem"
    figure build_seconds $((($(now_ms) - t0) / 1000))
}

size() { # IMAGE
    local image=$1 bytes gz
    bytes=$(engine image inspect --format '{{.Size}}' "$image")
    gz=$(engine save "$image" 2>/dev/null | gzip -6 | wc -c)
    figure image_bytes "$bytes"
    figure image_gzip_bytes "$gz"
    say "$image: $((bytes / 1048576)) MiB uncompressed, $((gz / 1048576)) MiB as '$ENGINE save | gzip'"
}

# --- check -------------------------------------------------------------------------------------
free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

http() { # METHOD PATH [curl args...]: prints the body, fails unless 200
    local m=$1 p=$2
    shift 2
    curl -sS --fail-with-body --max-time 30 -X "$m" "http://127.0.0.1:$port$p" "$@"
}

# The container's memory cgroup, seen from the host (v1: memory/<path>, v2: the unified <path>).
cgroup_file() { # PID FILE-v1 FILE-v2
    local pid=$1 rel
    rel=$(sed -n 's/^[0-9]*:memory:\(.*\)/\1/p' "/proc/$pid/cgroup")
    if [ -n "$rel" ] && [ -e "/sys/fs/cgroup/memory$rel/$2" ]; then
        echo "/sys/fs/cgroup/memory$rel/$2"
        return
    fi
    rel=$(sed -n 's/^0::\(.*\)/\1/p' "/proc/$pid/cgroup")
    [ -n "$rel" ] && [ -e "/sys/fs/cgroup$rel/$3" ] && echo "/sys/fs/cgroup$rel/$3"
}

ctr=
cleanup() { [ -z "$ctr" ] || engine rm -f "$ctr" >/dev/null 2>&1 || true; }
# The image's build: its revision (git describe) as a label, so that a check names what it ran.
revision() { git -C "$src" describe --always --dirty 2>/dev/null || echo unknown; }

check() { # IMAGE
    local image=$1 t0 t_ready pid uid limit peak body st drain_ms health=()
    have_image "$image" || die "no image $image: build it first ('$0 build')"
    say "$image, revision $(engine image inspect --format \
        '{{index .Config.Labels "org.opencontainers.image.revision"}}' "$image" 2>/dev/null)"
    command -v curl >/dev/null || die "curl is missing"
    port=$(free_port)
    ctr=ortserve-check-$$
    trap cleanup EXIT
    # podman runs the HEALTHCHECK from a systemd timer; without systemd as PID 1 there is none, so
    # the check below runs it on demand (`healthcheck run`), as the timer would.
    [ "$ENGINE" = podman ] && [ ! -d /run/systemd/system ] && health=(--health-interval=disable)
    t0=$(now_ms)
    # (podman without systemd also logs that it cannot reach systemd for the health-check timer: the
    # engine's own messages go to $WORK/engine.log.)
    mkdir -p "$WORK"
    engine run -d --name "$ctr" --network host --memory "$MEMORY" "${health[@]}" \
        -e ORTSERVE_HOST=127.0.0.1 -e ORTSERVE_PORT="$port" -e ORTSERVE_DRAIN_TIMEOUT_MS=10000 \
        "$image" >/dev/null 2>"$WORK/engine.log" || { cat "$WORK/engine.log" >&2; die "$ENGINE run failed"; }
    # Ready: the health endpoint answers 200 (ortserve listens only once every model is loaded).
    until curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:$port/v2/health/ready"; do
        [ "$(engine inspect --format '{{.State.Running}}' "$ctr")" = true ] ||
            { engine logs "$ctr" >&2; die "the container exited before it was ready"; }
        [ $(($(now_ms) - t0)) -lt 60000 ] || { engine logs "$ctr" >&2; die "not ready within 60 s"; }
        sleep 0.05
    done
    t_ready=$(($(now_ms) - t0))
    figure ready_ms_from_run "$t_ready"
    # ortserve's own figure: from its start to listening with every model loaded (`startup_ms` of
    # its `listening` log line).
    engine logs "$ctr" 2>&1 | sed -n 's/.*"event":"listening".*"startup_ms":\([0-9.]*\).*/figure startup_ms \1/p'

    # It serves the demo models.
    for m in mlp mobilenetv2 text_orientation; do
        http GET "/v2/models/$m/ready" -o /dev/null || die "model $m is not ready"
    done
    body=$(http POST /v2/models/mlp/infer -H 'Content-Type: application/json' -d "{\"inputs\":[{\"name\":\"x\",\
\"shape\":[1,64],\"datatype\":\"FP32\",\"data\":[$(seq -s, 1 64)]}],\"outputs\":[{\"name\":\"probs\"}]}")
    case $body in *'"shape":[1,10]'*) ;; *) die "mlp infer: $body" ;; esac
    # The demo images are in the image: classify one taken out of it.
    engine cp "$ctr:/srv/ortserve/demo-images/text_upright.png" "$WORK/text_upright.png"
    body=$(http POST /v2/models/text_orientation/classify --data-binary "@$WORK/text_upright.png")
    case $body in '[{"label":"0",'*) ;; *) die "text_orientation classify: $body" ;; esac
    engine cp "$ctr:/srv/ortserve/demo-images/cat.jpg" "$WORK/cat.jpg"
    # Some load for the memory figure: 4 clients × 4 requests × 8 images through MobileNetV2 at once.
    # Each answer is 200, or 503 when the memory guard or a full queue refuses (never a dead server).
    local codes i imgs=()
    for i in 1 2 3 4 5 6 7 8; do imgs+=(-F "i$i=@$WORK/cat.jpg"); done
    codes=$(for i in 1 2 3 4; do
        for _ in 1 2 3 4; do
            curl -s -o /dev/null -w '%{http_code}\n' --max-time 60 "${imgs[@]}" \
                "http://127.0.0.1:$port/v2/models/mobilenetv2/classify" || true
        done &
    done
        wait)
    figure classify_batch8_status_200 "$(grep -c '^200$' <<<"$codes" || true)"
    grep -qv '^\(200\|503\)$' <<<"$codes" && die "classify under load answered: $(sort <<<"$codes" | uniq -c | xargs)"
    grep -q '^200$' <<<"$codes" || die "classify under load: no 200"
    say "serves mlp, mobilenetv2 and text_orientation"

    # The image's HEALTHCHECK passes while ready.
    if [ "$ENGINE" = podman ]; then
        st=$(engine healthcheck run "$ctr" 2>&1) || die "healthcheck: $st"
    else
        engine exec "$ctr" /usr/local/libexec/ortserve/healthcheck || die "the health check failed"
    fi
    say "the HEALTHCHECK passes"

    # ortserve is PID 1 of the container and runs as the image's user, uid 10001 (read on the host).
    pid=$(engine inspect --format '{{.State.Pid}}' "$ctr")
    uid=$(awk '/^Uid:/ {print $2}' "/proc/$pid/status")
    [ "$(tr '\0' ' ' <"/proc/$pid/cmdline")" = "/usr/local/bin/ortserve serve " ] ||
        die "PID 1 of the container is not ortserve: $(tr '\0' ' ' <"/proc/$pid/cmdline")"
    [ "$uid" = "$IMAGE_UID" ] || die "ortserve runs as uid $uid, not $IMAGE_UID"
    figure uid "$uid"
    say "ortserve runs as uid $uid"

    # Memory: ortserve sees the limit, and the group's peak stays under it (no OOM kill).
    limit=$(cat "$(cgroup_file "$pid" memory.limit_in_bytes memory.max)")
    body=$(http GET /metrics)
    grep -q "^ortserve_memory_limit_bytes $limit\$" <<<"$body" ||
        die "ortserve does not report the limit $limit: $(grep '^ortserve_memory_limit_bytes' <<<"$body")"
    peak=$(cat "$(cgroup_file "$pid" memory.max_usage_in_bytes memory.peak)" 2>/dev/null || echo 0)
    figure memory_limit_bytes "$limit"
    figure memory_peak_bytes "$peak"
    figure memory_rss_kib "$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")"
    [ "$peak" -lt "$limit" ] || die "the group's peak $peak reached its limit $limit"
    say "memory: peak $((peak / 1048576)) MiB of a $((limit / 1048576)) MiB limit"

    # SIGTERM: ortserve drains and exits 0 well within the drain timeout (10 s) and `stop --time`.
    t0=$(now_ms)
    engine stop --time 15 "$ctr" >/dev/null 2>>"$WORK/engine.log"
    drain_ms=$(($(now_ms) - t0))
    st=$(engine inspect --format '{{.State.ExitCode}} {{.State.OOMKilled}}' "$ctr")
    figure stop_ms "$drain_ms"
    [ "$st" = "0 false" ] || { engine logs "$ctr" 2>&1 | tail -5 >&2; die "exit status and OOM kill: $st"; }
    [ "$drain_ms" -lt 10000 ] || die "stopping took $drain_ms ms"
    engine logs "$ctr" 2>&1 | grep -q '"event":"stopped".*"drained":true' ||
        { engine logs "$ctr" 2>&1 | tail -3 >&2; die "ortserve did not log a drained stop"; }
    say "SIGTERM: exit 0 after $drain_ms ms"
    say "ok: $image"
}

cmd=${1:-all}
case $cmd in
base) base ;;
build) build "${2:-$default_image}" ;;
check) check "${2:-$default_image}" ;;
size) size "${2:-$default_image}" ;;
all)
    image=${2:-$default_image}
    [ "$ENGINE" != podman ] || base
    build "$image"
    check "$image"
    size "$image"
    ;;
-h | --help) usage ;;
*) usage ;;
esac
