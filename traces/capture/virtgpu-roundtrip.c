/*
 * A 3D resource's bytes through the kernel's virtio-gpu uAPI and back, in the capture guest.
 *
 * Mesa's virgl driver sends its uploads inside SUBMIT_3D streams (the host announces encoded
 * transfers) and reads back with TRANSFER_FROM_HOST_3D, so a Mesa session never sends
 * TRANSFER_TO_HOST_3D. This program does what its winsys does when transfers are not encoded:
 * the DRM_IOCTL_VIRTGPU_TRANSFER_TO_HOST ioctl, which the kernel turns into TRANSFER_TO_HOST_3D.
 *
 * RESOURCE_CREATE (a 64x64 B8G8R8A8 2D texture; the kernel creates the process's context
 * first), a pattern written into its guest backing, TRANSFER_TO_HOST, the backing cleared,
 * TRANSFER_FROM_HOST, and a check that the pattern came back. Exit 0 when it did.
 *
 * Built by capture.sh (gcc -static, libdrm-dev's header); not part of the Python package.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <drm.h>
#include <virtgpu_drm.h>

#define W 64
#define H 64
#define SIZE (W * H * 4)
/* virglrenderer's values (virgl_hw.h): PIPE_TEXTURE_2D, VIRGL_FORMAT_B8G8R8A8_UNORM,
 * VIRGL_BIND_RENDER_TARGET | VIRGL_BIND_SAMPLER_VIEW. */
#define TARGET_TEXTURE_2D 2
#define FORMAT_B8G8R8A8_UNORM 1
#define BIND_RENDER_TARGET_SAMPLER_VIEW ((1u << 1) | (1u << 3))

static int fail(const char *what)
{
    fprintf(stderr, "virtgpu-roundtrip: %s: %s\n", what, strerror(errno));
    return 1;
}

static int wait_idle(int fd, uint32_t handle)
{
    struct drm_virtgpu_3d_wait w = {.handle = handle};
    return ioctl(fd, DRM_IOCTL_VIRTGPU_WAIT, &w);
}

int main(int argc, char **argv)
{
    const char *dev = argc > 1 ? argv[1] : "/dev/dri/card0";
    int fd = open(dev, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return fail(dev);

    struct drm_virtgpu_getparam gp = {.param = VIRTGPU_PARAM_3D_FEATURES};
    int has3d = 0;
    gp.value = (uintptr_t)&has3d;
    if (ioctl(fd, DRM_IOCTL_VIRTGPU_GETPARAM, &gp) || !has3d) {
        fprintf(stderr, "virtgpu-roundtrip: the device has no 3D (VIRGL not negotiated)\n");
        return 1;
    }

    struct drm_virtgpu_resource_create rc = {
        .target = TARGET_TEXTURE_2D,
        .format = FORMAT_B8G8R8A8_UNORM,
        .bind = BIND_RENDER_TARGET_SAMPLER_VIEW,
        .width = W,
        .height = H,
        .depth = 1,
        .array_size = 1,
        .size = SIZE,
    };
    if (ioctl(fd, DRM_IOCTL_VIRTGPU_RESOURCE_CREATE, &rc))
        return fail("RESOURCE_CREATE");

    struct drm_virtgpu_map map = {.handle = rc.bo_handle};
    if (ioctl(fd, DRM_IOCTL_VIRTGPU_MAP, &map))
        return fail("MAP");
    uint32_t *px = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, map.offset);
    if (px == MAP_FAILED)
        return fail("mmap");

    for (uint32_t i = 0; i < W * H; i++)
        px[i] = i * 2654435761u;

    struct drm_virtgpu_3d_transfer_to_host to = {
        .bo_handle = rc.bo_handle,
        .box = {.w = W, .h = H, .d = 1},
    };
    if (ioctl(fd, DRM_IOCTL_VIRTGPU_TRANSFER_TO_HOST, &to))
        return fail("TRANSFER_TO_HOST");
    if (wait_idle(fd, rc.bo_handle))
        return fail("WAIT after TRANSFER_TO_HOST");

    memset(px, 0, SIZE);
    struct drm_virtgpu_3d_transfer_from_host from = {
        .bo_handle = rc.bo_handle,
        .box = {.w = W, .h = H, .d = 1},
    };
    if (ioctl(fd, DRM_IOCTL_VIRTGPU_TRANSFER_FROM_HOST, &from))
        return fail("TRANSFER_FROM_HOST");
    if (wait_idle(fd, rc.bo_handle))
        return fail("WAIT after TRANSFER_FROM_HOST");

    uint32_t wrong = 0;
    for (uint32_t i = 0; i < W * H; i++)
        wrong += px[i] != i * 2654435761u;
    printf("virtgpu-roundtrip: resource %u, %d bytes out and back, %u pixels differ\n", rc.res_handle, SIZE,
           wrong);

    munmap(px, SIZE);
    struct drm_gem_close close_bo = {.handle = rc.bo_handle};
    ioctl(fd, DRM_IOCTL_GEM_CLOSE, &close_bo);
    close(fd);
    return wrong ? 1 : 0;
}
