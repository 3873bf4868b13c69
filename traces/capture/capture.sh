#!/usr/bin/env bash
# Capture a real virtio-gpu trace: Debian's own kernel drives QEMU's virtio-gpu-pci device
# from a busybox initramfs, under TCG. Writes into --out:
#   qemu-trace.log         QEMU's -D file: virtio_gpu* trace events, virtqueue_pop/fill, guest_errors
#                          (--qemu-trace gpu-only: the virtio_gpu* events alone)
#   guest-tracepoints.log  the guest's tracefs buffer (virtio_gpu_cmd_queue/_response), verbatim
#   serial.log             the whole serial console
#   session.json           versions, date, the exact QEMU command line, the workload steps run
#
# Needs root for apt-get (packages missing on the host, never the kernel: that one is only
# unpacked into the cache). Standalone: nothing from the repository's Python package.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: capture.sh --out DIR [options]

  --out DIR              output directory (created; existing capture files are replaced)
  --workload NAME        fbdev-modetest (default), fbdev, or gl (3D: Debian's kmscube and
                         glmark2-es2-drm rendering through Mesa's virgl driver; needs --gl)
  --gl                   the GL device (virtio-gpu-gl-pci) with -display egl-headless, which
                         renders with Mesa's llvmpipe where the host has no GPU
  --device-opts OPTS     appended to the device (e.g. blob=true,hostmem=64M on a QEMU that has them)
  --qemu PATH            QEMU binary (default: qemu-system-x86_64, installed from apt if missing)
  -L DIR                 extra QEMU firmware dir, repeatable (for an unpacked QEMU)
  --qemu-module-dir DIR  exported as QEMU_MODULE_DIR (for an unpacked QEMU)
  --qemu-suite SUITE     use QEMU from a Debian suite (e.g. bookworm-backports), downloaded and
                         unpacked into the cache, not installed; sets --qemu, -L, --qemu-module-dir
  --qemu-root DIR        QEMU installed in a whole Debian root of another release (e.g. Debian 13's,
                         made by `virtgpu-conform setup qemu@trixie`): run through that root's
                         dynamic loader and libraries, its modules, firmware and Mesa
  --kernel-suite SUITE   the guest kernel from a Debian suite (e.g. bookworm-backports: Linux 6.12,
                         virtio_pci built in) instead of the release's
  --qemu-trace HOW       full (default): -msg timestamp=on, -trace 'virtio_gpu*', virtqueue_pop,
                         virtqueue_fill and -d guest_errors; gpu-only: -trace 'virtio_gpu*' and
                         nothing else, as QEMU's tracing documentation has it
  --guest-trace WHEN     start (default): the guest's tracepoints are on before the driver probes
                         the device; late: after (what a built-in transport does to a naive recipe)
  --timeout SECS         hard limit for the guest run (default 120)

Cache: $VIRTGPU_CAPTURE_CACHE, default ~/.cache/virtgpu-conform/capture.
EOF
}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${VIRTGPU_CAPTURE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/virtgpu-conform/capture}
OUT=""
WORKLOAD=fbdev-modetest
QEMU=qemu-system-x86_64
QEMU_LAUNCHER=()
QEMU_L=()
GL=false
DEVICE_OPTS=""
QEMU_SUITE=""
QEMU_ROOT=""
KERNEL_SUITE=""
QEMU_TRACE=full
GUEST_TRACE=start
TIMEOUT=120

while [ $# -gt 0 ]; do
    case $1 in
    --out) OUT=$2; shift 2 ;;
    --workload) WORKLOAD=$2; shift 2 ;;
    --gl) GL=true; shift ;;
    --device-opts) DEVICE_OPTS=$2; shift 2 ;;
    --qemu) QEMU=$2; shift 2 ;;
    -L) QEMU_L+=(-L "$2"); shift 2 ;;
    --qemu-module-dir) export QEMU_MODULE_DIR=$2; shift 2 ;;
    --qemu-suite) QEMU_SUITE=$2; shift 2 ;;
    --qemu-root) QEMU_ROOT=$2; shift 2 ;;
    --kernel-suite) KERNEL_SUITE=$2; shift 2 ;;
    --qemu-trace) QEMU_TRACE=$2; shift 2 ;;
    --guest-trace) GUEST_TRACE=$2; shift 2 ;;
    --timeout) TIMEOUT=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "capture.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
[ -n "$OUT" ] || { usage >&2; exit 2; }
case $WORKLOAD in fbdev-modetest | fbdev | gl) ;; *) echo "capture.sh: unknown workload $WORKLOAD" >&2; exit 2 ;; esac
# Without virgl, Mesa would draw in the guest's CPU (kms_swrast): no 3D command at all.
[ "$WORKLOAD" != gl ] || $GL || { echo "capture.sh: the gl workload needs --gl" >&2; exit 2; }
case $QEMU_TRACE in full | gpu-only) ;; *) echo "capture.sh: --qemu-trace is full or gpu-only" >&2; exit 2 ;; esac
case $GUEST_TRACE in start | late) ;; *) echo "capture.sh: --guest-trace is start or late" >&2; exit 2 ;; esac

log() { echo "capture: $*" >&2; }
T0=$(date +%s.%N)
mkdir -p "$CACHE" "$OUT"
OUT=$(cd "$OUT" && pwd)

# apt-get download writes into the current directory and, as root, warns that the _apt
# sandbox user cannot reach the cache dir; running it as root is what we mean.
APT_DL=(apt-get -q -o APT::Sandbox::User=root download)

ensure_packages() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return
    log "installing ${missing[*]}"
    # A stale package list is the usual reason an install fails on a fresh machine.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 ||
        { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; }
}

pkgs=(busybox-static cpio kmod)
[ "$WORKLOAD" = fbdev-modetest ] && pkgs+=(libdrm-tests)
# Mesa's virgl driver (virtio_gpu_dri.so) and its EGL/GBM loaders go into the guest.
[ "$WORKLOAD" = gl ] && pkgs+=(kmscube glmark2-es2-drm libgl1-mesa-dri libegl-mesa0 libgbm1)
# virtgpu-roundtrip.c is built here, static, against the kernel uAPI header libdrm ships.
[ "$WORKLOAD" = gl ] && pkgs+=(gcc libc6-dev libdrm-dev)
# The host side of the GL device: its module (qemu-system-gui before QEMU 8) and llvmpipe.
$GL && [ "$QEMU" = qemu-system-x86_64 ] && [ -z "$QEMU_SUITE$QEMU_ROOT" ] && pkgs+=(qemu-system-gui libgl1-mesa-dri)
[ "$QEMU" = qemu-system-x86_64 ] && [ -z "$QEMU_SUITE$QEMU_ROOT" ] && pkgs+=(qemu-system-x86)
ensure_packages "${pkgs[@]}"

add_suite() { # SUITE: let apt-get download see a suite (e.g. bookworm-backports)
    apt-cache policy | grep -q " $1/main " && return
    # Backports are pinned below the release (NotAutomatic), so this source changes
    # nothing that is installed; it only lets apt-get download see the suite.
    log "adding apt source for $1"
    echo "deb http://deb.debian.org/debian $1 main" >"/etc/apt/sources.list.d/$1.list"
    apt-get update -q >&2
}

# --- the kernel: Debian's real one, unpacked into the cache, never installed --------------
# linux-image-amd64 is a metapackage; the real image package is its one dependency.
KMETA=linux-image-amd64
if [ -n "$KERNEL_SUITE" ]; then
    add_suite "$KERNEL_SUITE"
    KMETA=linux-image-amd64/$KERNEL_SUITE
fi
KPKG=$(apt-cache depends "$KMETA" | awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }')
KVERSION=$(apt-cache show --no-all-versions "$KPKG" | awk '$1 == "Version:" { print $2; exit }')
KDIR=$CACHE/kernel/${KPKG}_$KVERSION
if [ ! -e "$KDIR/.complete" ]; then
    log "fetching $KPKG $KVERSION"
    rm -rf "$KDIR" "$CACHE/dl"
    mkdir -p "$CACHE/dl" "$KDIR"
    (cd "$CACHE/dl" && "${APT_DL[@]}" "$KPKG=$KVERSION" >&2)
    dpkg -x "$CACHE"/dl/"${KPKG}"_*.deb "$KDIR"
    # The extracted tree is the cache; the .deb is not needed again.
    rm -rf "$CACHE/dl"
    depmod -b "$KDIR" "$(ls "$KDIR/lib/modules")"
    touch "$KDIR/.complete"
fi
KREL=$(ls "$KDIR/lib/modules")
VMLINUZ=$KDIR/boot/vmlinuz-$KREL

# --- QEMU from another suite, unpacked into the cache ------------------------------------
QEMU_VERSION_PKG=""
if [ -n "$QEMU_SUITE" ]; then
    QDIR=$CACHE/qemu-$QEMU_SUITE
    if [ ! -e "$QDIR/.complete" ]; then
        add_suite "$QEMU_SUITE"
        log "fetching QEMU from $QEMU_SUITE"
        rm -rf "$QDIR" "$CACHE/dl"
        mkdir -p "$CACHE/dl" "$QDIR"
        (
            cd "$CACHE/dl"
            "${APT_DL[@]}" qemu-system-x86/"$QEMU_SUITE" qemu-system-common/"$QEMU_SUITE" \
                qemu-system-data/"$QEMU_SUITE" qemu-system-gui/"$QEMU_SUITE" >&2
            # the GL devices and egl-headless (qemu-system-gui holds them before QEMU 8)
            "${APT_DL[@]}" qemu-system-modules-opengl/"$QEMU_SUITE" >&2 || true
            # seabios is not always in the suite; the release's one boots the same.
            "${APT_DL[@]}" seabios/"$QEMU_SUITE" >&2 || "${APT_DL[@]}" seabios >&2
        )
        for deb in "$CACHE"/dl/*.deb; do dpkg -x "$deb" "$QDIR"; done
        dpkg-deb -f "$CACHE"/dl/qemu-system-x86_*.deb Version >"$QDIR/.version"
        rm -rf "$CACHE/dl"
        touch "$QDIR/.complete"
    fi
    QEMU=$QDIR/usr/bin/qemu-system-x86_64
    QEMU_L+=(-L "$QDIR/usr/share/qemu" -L "$QDIR/usr/share/seabios")
    export QEMU_MODULE_DIR=$QDIR/usr/lib/x86_64-linux-gnu/qemu
    QEMU_VERSION_PKG=$(cat "$QDIR/.version")
    # Its shared libraries come from the host; report the missing ones by name.
    if ldd "$QEMU" | grep -q 'not found'; then
        log "$QEMU needs libraries this host lacks:"; ldd "$QEMU" | grep 'not found' >&2; exit 1
    fi
fi
if [ -n "$QEMU_ROOT" ]; then
    QEMU_ROOT=$(cd "$QEMU_ROOT" && pwd)
    ARCH=usr/lib/x86_64-linux-gnu
    [ -e "$QEMU_ROOT/etc/debian_version" ] && [ -x "$QEMU_ROOT/usr/bin/qemu-system-x86_64" ] ||
        { log "$QEMU_ROOT is not a Debian root with QEMU installed (virtgpu-conform setup qemu@trixie makes one)"; exit 1; }
    QEMU=$QEMU_ROOT/usr/bin/qemu-system-x86_64
    # Its own C library: the host's loader would run it against the host's libraries.
    QEMU_LAUNCHER=("$QEMU_ROOT/$ARCH/ld-linux-x86-64.so.2" --library-path "$QEMU_ROOT/$ARCH:$QEMU_ROOT/lib/x86_64-linux-gnu")
    QEMU_L+=(-L "$QEMU_ROOT/usr/share/qemu" -L "$QEMU_ROOT/usr/share/seabios")
    export QEMU_MODULE_DIR=$QEMU_ROOT/$ARCH/qemu
    # Mesa's loaders look in the root too, or they would open the host's drivers.
    export LIBGL_DRIVERS_PATH=$QEMU_ROOT/$ARCH/dri GBM_BACKENDS_PATH=$QEMU_ROOT/$ARCH/gbm
    export __EGL_VENDOR_LIBRARY_DIRS=$QEMU_ROOT/usr/share/glvnd/egl_vendor.d
    QEMU_VERSION_PKG=$(dpkg-query --admindir="$QEMU_ROOT/var/lib/dpkg" -W -f='${Version}' qemu-system-x86)
fi
[ -n "$QEMU_ROOT" ] || command -v "$QEMU" >/dev/null || { log "no QEMU binary: $QEMU"; exit 1; }
QEMU_VERSION=$("${QEMU_LAUNCHER[@]}" "$QEMU" --version | head -n 1)
if [ -z "$QEMU_VERSION_PKG" ] && [ "$QEMU" = qemu-system-x86_64 ]; then
    QEMU_VERSION_PKG=$(dpkg-query -W -f='${Version}' qemu-system-x86)
fi

# --- the initramfs ------------------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/virtgpu-capture.XXXXXX")
QPID=""
cleanup() {
    # QEMU does not exit on its own when we are interrupted: never leave one behind.
    if [ -n "$QPID" ]; then kill -TERM "$QPID" 2>/dev/null && wait "$QPID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ROOT=$WORK/root
mkdir -p "$ROOT"/{bin,dev,proc,sys,tmp,etc/capture}
cp /bin/busybox "$ROOT/bin/busybox"
# /init installs the other applet links itself: cheaper than hundreds of ln here.
ln -s busybox "$ROOT/bin/sh"
install -m 0755 "$HERE/init.sh" "$ROOT/init"
echo "$WORKLOAD" >"$ROOT/etc/capture/workload"
echo "$GUEST_TRACE" >"$ROOT/etc/capture/guest-trace"
# A transport built into the kernel (6.12's virtio_pci) has no module: its list stays empty.
: >"$ROOT/etc/capture/modules-driver"
: >"$ROOT/etc/capture/modules-transport"

# Module load order from modprobe itself, as two lists: the driver with its deps, then the
# transport (see init.sh for why the driver must come first).
modlist() { # LISTFILE MODULE...: append insmod paths not yet listed in any list
    local list=$1; shift
    modprobe -a -d "$KDIR" -S "$KREL" --show-depends "$@" | awk '$1 == "insmod" { print $2 }' |
        while read -r ko; do
            rel=${ko#"$KDIR"}
            grep -qxF "$rel" "$ROOT"/etc/capture/modules-* 2>/dev/null && continue
            mkdir -p "$ROOT$(dirname "$rel")"
            cp "$ko" "$ROOT$rel"
            echo "$rel" >>"$list"
        done
}
modlist "$ROOT/etc/capture/modules-driver" virtio_gpu
modlist "$ROOT/etc/capture/modules-transport" virtio_pci

# FILE...: into the initramfs at the same paths, with every library the loader will ask for
# (ldd's paths, symlinks resolved).
copy_with_libs() {
    local f lib
    for f in "$@"; do
        mkdir -p "$ROOT$(dirname "$f")"
        cp -L "$f" "$ROOT$f"
        ldd "$f" | grep -oE '/[^ ]+' | while read -r lib; do
            [ -e "$ROOT$lib" ] && continue
            mkdir -p "$ROOT$(dirname "$lib")"
            cp -L "$lib" "$ROOT$lib"
        done
    done
}

if [ "$WORKLOAD" = fbdev-modetest ]; then
    copy_with_libs /usr/bin/modetest
fi
if [ "$WORKLOAD" = gl ]; then
    # kmscube links EGL (glvnd), GBM and GLES; glmark2 opens EGL and GLES at run time. Mesa's
    # pieces are opened at run time too: glvnd's vendor file names libEGL_mesa, which loads
    # the DRI driver named after the kernel driver (virtio_gpu_dri.so, Mesa's virgl).
    ARCH_LIB=/usr/lib/x86_64-linux-gnu
    copy_with_libs /usr/bin/kmscube /usr/bin/glmark2-es2-drm "$ARCH_LIB/libEGL.so.1" "$ARCH_LIB/libGLESv2.so.2" \
        "$ARCH_LIB/libEGL_mesa.so.0" "$ARCH_LIB/dri/virtio_gpu_dri.so"
    mkdir -p "$ROOT/usr/share/glvnd/egl_vendor.d"
    cp /usr/share/glvnd/egl_vendor.d/50_mesa.json "$ROOT/usr/share/glvnd/egl_vendor.d/"
    cp -r /usr/share/glmark2 "$ROOT/usr/share/"
    gcc -static -O2 -Wall -I/usr/include/libdrm -o "$ROOT/usr/bin/virtgpu-roundtrip" "$HERE/virtgpu-roundtrip.c"
fi

INITRD=$WORK/initrd.cpio
(cd "$ROOT" && find . | cpio -o -H newc --quiet >"$INITRD")

# --- the run ------------------------------------------------------------------------------
if [ "$QEMU_TRACE" = full ]; then
    TRACE=(-msg timestamp=on -trace 'virtio_gpu*' -trace virtqueue_pop -trace virtqueue_fill -d guest_errors)
else
    TRACE=(-trace 'virtio_gpu*')
fi
DEVICE=virtio-gpu-pci
DISPLAY_OPT=(-display none)
if $GL; then
    DEVICE=virtio-gpu-gl-pci
    # /dev/null as the render node: EGL on GBM falls back to llvmpipe without a GPU.
    DISPLAY_OPT=(-display egl-headless,rendernode=/dev/null)
fi
# Mesa with LLVM makes the initramfs about 200 MB, unpacked into the guest's RAM.
MEM=512
[ "$WORKLOAD" = gl ] && MEM=2048
CMD=("${QEMU_LAUNCHER[@]}" "$QEMU" "${QEMU_L[@]}"
    -accel tcg -machine q35 -m $MEM -smp 1 -nodefaults
    -serial stdio "${DISPLAY_OPT[@]}" -no-reboot
    -kernel "$VMLINUZ" -initrd "$INITRD"
    -append 'console=ttyS0 panic=-1 quiet'
    -device "$DEVICE${DEVICE_OPTS:+,$DEVICE_OPTS}"
    "${TRACE[@]}" -D "$OUT/qemu-trace.log")

rm -f "$OUT"/{qemu-trace.log,guest-tracepoints.log,serial.log,session.json}
log "booting ($QEMU_VERSION, kernel $KREL, workload $WORKLOAD)"
T1=$(date +%s.%N)
# timeout is the hard limit for a hung guest; it passes our TERM on to QEMU in cleanup.
timeout -k 5 "$TIMEOUT" "${CMD[@]}" </dev/null >"$OUT/serial.log" 2>"$WORK/qemu.stderr" &
QPID=$!
QRC=0
wait "$QPID" || QRC=$?
QPID=""
T2=$(date +%s.%N)
[ -s "$WORK/qemu.stderr" ] && { log "QEMU stderr:"; cat "$WORK/qemu.stderr" >&2; }

# The console turns \n into \r\n; the dump is otherwise exactly what tracefs printed.
tr -d '\r' <"$OUT/serial.log" >"$WORK/serial" && mv "$WORK/serial" "$OUT/serial.log"
sed -n '/^=== TRACEFS BEGIN ===$/,/^=== TRACEFS END ===$/{/^=== TRACEFS /d;p}' \
    "$OUT/serial.log" >"$OUT/guest-tracepoints.log"
COMPLETE=true
grep -qx '=== TRACEFS END ===' "$OUT/serial.log" || COMPLETE=false

# session.json: values go through the environment, so no quoting can break the JSON.
S_WORKLOAD=$WORKLOAD S_COMPLETE=$COMPLETE S_QRC=$QRC S_T0=$T0 S_T1=$T1 S_T2=$T2 \
S_QEMU_VERSION=$QEMU_VERSION S_QEMU_PKG=$QEMU_VERSION_PKG S_QEMU_SUITE=$QEMU_SUITE S_QEMU_ROOT=$QEMU_ROOT \
S_KPKG=$KPKG S_KVERSION=$KVERSION S_KREL=$KREL S_KSUITE=$KERNEL_SUITE \
S_QEMU_TRACE=$QEMU_TRACE S_GUEST_TRACE=$GUEST_TRACE \
S_MODULES_DRIVER=$(cat "$ROOT/etc/capture/modules-driver") \
S_MODULES_TRANSPORT=$(cat "$ROOT/etc/capture/modules-transport") \
S_BUSYBOX=$(dpkg-query -W -f='${Version}' busybox-static) \
S_LIBDRM_TESTS=$([ "$WORKLOAD" = fbdev-modetest ] && dpkg-query -W -f='${Version}' libdrm-tests) \
S_KMSCUBE=$([ "$WORKLOAD" = gl ] && dpkg-query -W -f='${Version}' kmscube) \
S_GLMARK2=$([ "$WORKLOAD" = gl ] && dpkg-query -W -f='${Version}' glmark2-es2-drm) \
S_MESA=$([ "$WORKLOAD" = gl ] && dpkg-query -W -f='${Version}' libgl1-mesa-dri) \
S_DEVICE=$DEVICE${DEVICE_OPTS:+,$DEVICE_OPTS} \
python3 - "$OUT" "${CMD[@]}" <<'PY'
import datetime, json, os, re, shlex, sys
out, cmd = sys.argv[1], sys.argv[2:]
e = os.environ
serial = open(os.path.join(out, "serial.log"), errors="replace").read()
steps = [{"name": n, "rc": int(rc)}
         for n, rc in re.findall(r"^=== STEP (\S+) END rc=(\d+) ===$", serial, re.M)]
stats = re.search(r"^tracefs stats: (.*)$", serial, re.M)
t0, t1, t2 = (float(e[k]) for k in ("S_T0", "S_T1", "S_T2"))
session = {
    "workload": e["S_WORKLOAD"],
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "complete": e["S_COMPLETE"] == "true",
    "qemu": {"version": e["S_QEMU_VERSION"], "package_version": e["S_QEMU_PKG"] or None,
             "suite": e["S_QEMU_SUITE"] or None,
             "root": e["S_QEMU_ROOT"] or None, "exit_status": int(e["S_QRC"])},
    "qemu_trace": e["S_QEMU_TRACE"],
    "guest_trace": e["S_GUEST_TRACE"],
    "kernel": {"package": e["S_KPKG"], "package_version": e["S_KVERSION"], "release": e["S_KREL"],
               "suite": e["S_KSUITE"] or None,
               "modules_loaded": {"driver_first": e["S_MODULES_DRIVER"].split(),
                                  "transport_after_tracepoints": e["S_MODULES_TRANSPORT"].split()}},
    "busybox_static": e["S_BUSYBOX"],
    "libdrm_tests": e["S_LIBDRM_TESTS"] or None,
    "kmscube": e["S_KMSCUBE"] or None,
    "glmark2_es2_drm": e["S_GLMARK2"] or None,
    "guest_mesa": e["S_MESA"] or None,
    "device": e["S_DEVICE"],
    "accel": "tcg",
    "command": cmd,
    "command_line": shlex.join(cmd),
    "environment": {k: e[k] for k in ("QEMU_MODULE_DIR", "LIBGL_DRIVERS_PATH", "GBM_BACKENDS_PATH",
                                      "__EGL_VENDOR_LIBRARY_DIRS") if e.get(k)},
    "steps": steps,
    "tracefs_stats": stats.group(1).strip() if stats else None,
    "seconds": {"qemu_run": round(t2 - t1, 1), "total": round(t2 - t0, 1)},
}
with open(os.path.join(out, "session.json"), "w") as f:
    json.dump(session, f, indent=2)
    f.write("\n")
print(f"capture: done in {t2 - t0:.1f} s (QEMU {t2 - t1:.1f} s): {out}", file=sys.stderr)
PY

$COMPLETE || { log "no complete tracefs dump in serial.log: the guest did not finish (QEMU exit $QRC)"; exit 1; }
