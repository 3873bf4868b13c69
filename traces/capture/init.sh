#!/bin/sh
# PID 1 of the capture guest (busybox sh). capture.sh copies it into the initramfs as
# /init, next to /etc/capture/{workload,modules-driver,modules-transport}.
#
# Everything it prints goes to the serial console, which capture.sh records as
# serial.log. The host reads two kinds of marker lines from it:
#   === STEP <name> END rc=<n> ===         one per workload step (goes into session.json)
#   === TRACEFS BEGIN === / === TRACEFS END ===   the guest's tracefs buffer between them
# Nothing else in here is parsed, so the chatter may change freely.

export PATH=/bin:/usr/bin
/bin/busybox --install -s /bin
mount -t devtmpfs devtmpfs /dev
# The initramfs has no /dev/console of its own: until devtmpfs is up the kernel has
# nowhere to send our output, so re-open the console now.
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys

say() { echo "=== $* ==="; }

# Run one workload step between markers; a failing step is recorded, never fatal,
# because a half-run workload still gives a useful trace.
# Once tracing is on, the same markers also go into the trace buffer (trace_marker), so
# guest-tracepoints.log shows which step queued which command.
step() {
    name=$1; shift
    mark "STEP $name BEGIN"
    "$@"
    rc=$?
    mark "STEP $name END rc=$rc"
    return $rc
}
mark() {
    say "$*"
    [ -e "$T/trace_marker" ] && echo "$*" >"$T/trace_marker"
}

T=/sys/kernel/tracing
if ! mount -t tracefs tracefs $T 2>/dev/null; then
    mount -t debugfs debugfs /sys/kernel/debug
    T=/sys/kernel/debug/tracing
fi

# Room for every event of a run (a few thousand), from an empty buffer.
echo 8192 >$T/buffer_size_kb
echo >$T/trace

load_modules() {
    while read -r ko; do
        insmod "$ko" || return 1
    done <"$1"
}

# The virtio_gpu tracepoints only exist once the module is loaded, and loading it on a
# bus that already has the device probes it at once, so its first commands would be
# lost. So the driver goes in while it can probe nothing: on Debian 12's 6.1 kernel no
# virtio transport exists yet (virtio_pci is a module, loaded after the tracepoints); on a
# kernel with virtio_pci built in (bookworm-backports' 6.12) the device is there from boot,
# so the bus's automatic probing is off while the driver loads. The tracepoints are
# enabled; only then does the driver probe the device, traced from its first command.
# (With "late" in /etc/capture/guest-trace the order is the one that loses the start: the
# driver probes as it loads and the tracepoints come after, as a recipe unaware of a
# built-in transport would have it.)
hold_probing() {
    [ "$LATE" = late ] && return 0
    [ -e /sys/bus/virtio/drivers_autoprobe ] && echo 0 >/sys/bus/virtio/drivers_autoprobe
    return 0
}

probe_devices() {
    [ -e /sys/bus/virtio/drivers_autoprobe ] || return 0
    echo 1 >/sys/bus/virtio/drivers_autoprobe
    for d in /sys/bus/virtio/devices/*; do
        [ -e "$d" ] && [ ! -e "$d/driver" ] && echo "${d##*/}" >/sys/bus/virtio/drivers_probe
    done
    return 0
}

enable_tracepoints() {
    echo 1 >$T/events/virtio_gpu/virtio_gpu_cmd_queue/enable &&
    echo 1 >$T/events/virtio_gpu/virtio_gpu_cmd_response/enable
}

wait_for() {
    i=0
    while [ ! -e "$1" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    [ -e "$1" ]
}

# fbdev path: the kernel's fbdev emulation turns writes into damage, then into
# TRANSFER_TO_HOST_2D + RESOURCE_FLUSH. Three bands of 100 rows of random pixels, each in
# one write(): a write of exactly one whole scanline (dd bs=stride) produced no command
# at all on this kernel.
fbdev_writes() {
    wait_for /dev/fb0 || return 1
    stride=$(cat /sys/class/graphics/fb0/stride)
    for band in 0 2 4; do
        dd if=/dev/urandom of=/dev/fb0 bs=$((stride * 100)) seek=$band count=1 || return 1
        sleep 0.3
    done
}

# Events in the trace buffer so far (the guest has one CPU).
entries() { awk '$1 == "entries:" { print $2 }' $T/per_cpu/cpu0/stats; }

# modetest (libdrm-tests) holds its mode until it reads a line from stdin, and with -v it
# flips pages until stdin becomes readable: as fast as the device answers, over 1,000
# flips/s here. So the line is sent once this step has traced $1 more events, or after
# $2 s: that bounds the trace by its size, not by the speed of the emulation. timeout is
# the backstop if modetest hangs anyway.
modetest_until() {
    events=$1; secs=$2; shift 2
    start=$(entries)
    (
        i=0
        while [ $(($(entries) - start)) -lt "$events" ] && [ $i -lt $((secs * 50)) ]; do
            sleep 0.02; i=$((i + 1))
        done
        echo
    ) | timeout $((secs + 20)) modetest -M virtio_gpu "$@" >/tmp/modetest.out 2>&1
    rc=$?
    # Page flipping prints a "freq:" line every 60 flips; keep the console short.
    head -n 20 /tmp/modetest.out
    return $rc
}

# Connector and its preferred (first listed) mode, from modetest's connector list:
# "id encoder status name size (mm) modes encoders" lines, then "  #0 1280x800 ..." modes.
pick_pipe() {
    wait_for /dev/dri/card0 || return 1
    modetest -M virtio_gpu -c >/tmp/connectors 2>&1 || return 1
    PIPE=$(awk '
        $3 == "connected" && !conn { conn = $1 }
        conn && $1 == "#0" { print conn ":" $2; exit }
    ' /tmp/connectors)
    echo "pipe: $PIPE"
    [ -n "$PIPE" ]
}

WORKLOAD=$(cat /etc/capture/workload)
LATE=$(cat /etc/capture/guest-trace)
echo "capture guest: kernel $(uname -r), workload $WORKLOAD, guest tracing $LATE"

hold_probing
step load-driver load_modules /etc/capture/modules-driver
step enable-tracepoints enable_tracepoints
step load-transport load_modules /etc/capture/modules-transport
step probe-devices probe_devices
step fbdev-write fbdev_writes

case $WORKLOAD in
*modetest*)
    if command -v modetest >/dev/null && step pick-connector pick_pipe; then
        # A mode set held for 1 s; then a few dozen page flips (3 commands, 6 events
        # each); then a few dozen cursor moves (no response tracepoint on the cursor queue).
        step modetest-set-mode modetest_until 100000 1 -s "$PIPE"
        step modetest-page-flip modetest_until 200 5 -s "$PIPE" -v
        step modetest-cursor modetest_until 50 5 -s "$PIPE" -C
    fi
    ;;
esac

# kmscube renders a spinning cube through Mesa's virgl driver (EGL on GBM): every frame is a
# SUBMIT_3D stream, then a page flip of a 3D resource. -c bounds the frames, so the trace is
# bounded by work, not by the emulation's speed; timeout is the backstop.
kmscube_run() {
    wait_for /dev/dri/card0 || return 1
    timeout 120 kmscube -D /dev/dri/card0 "$@" >/tmp/kmscube.out 2>&1
    rc=$?
    # Its EGL and GL extension lists are a few KB each run: the versions and renderer are enough.
    grep -v ' extensions: ' /tmp/kmscube.out
    return $rc
}

# glmark2's validation runs each scene for one frame and reads its pixels back
# (glReadPixels): the reads that TRANSFER_FROM_HOST_3D carries.
glmark2_validate() {
    wait_for /dev/dri/card0 || return 1
    timeout 120 glmark2-es2-drm --validate "$@"
}

case $WORKLOAD in
gl)
    step kmscube-smooth kmscube_run -c 60
    step kmscube-rgba kmscube_run -M rgba -c 30
    step kmscube-atomic kmscube_run -A -c 30
    step transfer-roundtrip virtgpu-roundtrip /dev/dri/card0
    step glmark2-validate glmark2_validate -b build -b texture -b shading -b bump -b effect2d -b pulsar -b desktop -b buffer
    ;;
esac

# fbcon's blinking cursor keeps sending TRANSFER_TO_HOST_2D + RESOURCE_FLUSH every 200 ms
# (real traffic, left on during the workload). Stopping it, and letting the last commands
# complete, before the buffer is frozen makes both logs end on the same command.
echo 0 >/sys/class/graphics/fbcon/cursor_blink
sleep 0.5
echo 0 >$T/tracing_on
# Lost events would silently thin the trace: say so.
echo "tracefs stats: $(tr '\n' ' ' <$T/per_cpu/cpu0/stats)"
# Kernel messages must not interleave with the dump.
echo 1 >/proc/sys/kernel/printk
say "TRACEFS BEGIN"
cat $T/trace
say "TRACEFS END"
echo "kernel messages about the display stack:"
dmesg | grep -iE 'virtio|drm|fb[0-9c]|gpu'
poweroff -f
