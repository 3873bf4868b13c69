"""Our own one-line summaries of the chapter's requirement statements, keyed by requirement ID.

These are the project's words, never the spec's: reports quote the spec only from a
copy the user points at. A requirement without an entry here gets a generated
summary, and `spec lint` lists it so the table can be brought up to date.
"""

SUMMARIES: dict[str, str] = {
    "device-configuration-fields/events_read/driver-MUST-NOT": "Driver never writes events_read in the config space.",
    "events/VIRTIO_GPU_EVENT_DISPLAY/driver-SHOULD": "On a display-change event the driver re-reads the display info.",
    "events/VIRTIO_GPU_EVENT_DISPLAY/device-SHOULD": "On a display-change event with F_EDID the EDIDs are re-read too (the text names the device).",
    "device-requirements-device-initialization/VIRTIO_GPU_CMD_GET_DISPLAY_INFO/driver-SHOULD": "At start-up the driver asks for the display info and sets up scanouts from it.",
    "device-requirements-device-initialization/VIRTIO_GPU_CMD_GET_EDID/device-SHOULD": "At start-up with F_EDID the EDIDs are fetched too (the text names the device).",
    "device-requirements-device-initialization/driver/driver-MAY": "Without usable display info the driver may fall back to a default mode.",
    "device-requirements-device-initialization/driver/driver-SHOULD": "At start-up the driver discovers the device's shared memory regions.",
    "device-requirements-device-initialization/shmid/device-MUST": "Shared memory region ids are only the ones the GPU chapter defines.",
    "device-requirements-device-initialization/VIRTIO_GPU_CMD_RESOURCE_MAP_BLOB/device-MUST": "A device exposing the host-visible region implements MAP_BLOB and UNMAP_BLOB.",
    "device-operation/guest/driver-must.1": "Without shared memory, the guest gets data into resources only by transfers.",
    "device-operation/guest/driver-must.2": "A resource needs backing attached before transfers to it can work.",
    "device-requirements-device-operation-command-lifecycle-and-fencing/device/device-MAY": "The device may complete controlq commands before their processing ends.",
    "device-requirements-device-operation-command-lifecycle-and-fencing/device/device-MUST": "A fenced command is returned only once its processing has finished.",
    "device-operation-configure-mouse-cursor/statement/driver-must": "A cursor image resource is 64x64.",
    "device-operation-configure-mouse-cursor/VIRTIO_GPU_CMD_RESOURCE_CREATE_2D/driver-MUST": "The driver creates, backs and fills the cursor resource, fenced, before using it.",
    "device-operation-request-header/fence_id/device-MUST": "A fenced request's response carries FLAG_FENCE, the same fence_id, and comes after completion.",
    "device-operation-request-header/ring_idx/driver-MAY": "With CONTEXT_INIT the driver may select a ring with FLAG_INFO_RING_IDX.",
    "device-operation-request-header/ring_idx/device-MUST": "Completing a fence on a ring timeline also answers every earlier fence on that timeline.",
    "device-operation-controlq/VIRTIO_GPU_CMD_SET_SCANOUT/driver-must": "The scanout rectangle lies inside the resource.",
    "device-operation-controlq/VIRTIO_GPU_CMD_GET_CAPSET_INFO/driver-MUST": "capset_index is below num_capsets.",
    "device-operation-controlq/VIRTIO_GPU_CMD_GET_CAPSET_INFO/device-MUST": "The returned capset_id is one of the defined capset ids.",
    "device-operation-controlq/VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB/driver-MUST.1": "blob_mem states the blob's memory properties.",
    "device-operation-controlq/VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB/driver-MUST.2": "blob_mem is not zero.",
    "device-operation-controlq/VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB/driver-MUST.3": "Host3D blobs are made from the context object that blob_id names.",
    "device-operation-controlq/VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB/driver-MUST.4": "blob_flags declare mapping, sharing and cross-device use.",
    "device-operation-controlq/VIRTIO_GPU_CMD_SET_SCANOUT_BLOB/driver-MUST": "SET_SCANOUT_BLOB's format is one of the defined formats.",
    "device-operation-controlq/VIRTIO_GPU_CMD_SET_SCANOUT_BLOB/driver-MAY": "SET_SCANOUT_BLOB's format may be a compressed layout.",
    "driver-requirements-device-operation-controlq/VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB/driver-MUST": "With BLOB_ALIGNMENT, a blob's size is a multiple of blob_alignment.",
    "device-operation-controlq-3d/VIRTIO_GPU_CMD_CTX_CREATE/device-MUST.1": "CTX_CREATE makes a context under the header's ctx_id.",
    "device-operation-controlq-3d/VIRTIO_GPU_CMD_CTX_CREATE/driver-MAY": "With CONTEXT_INIT, context_init's low byte may name a capset.",
    "device-operation-controlq-3d/VIRTIO_GPU_CMD_CTX_CREATE/device-MUST.2": "A context created for a named capset handles that capset's command stream.",
    "device-operation-controlq-3d/VIRTIO_GPU_CMD_RESOURCE_MAP_BLOB/driver-MUST-NOT": "A blob already mapped is not mapped again.",
    "driver-requirements-device-operation-controlq-3d/VIRTIO_GPU_CMD_RESOURCE_MAP_BLOB/driver-MUST": "With BLOB_ALIGNMENT, a map offset is a multiple of blob_alignment.",
    "device-operation-cursorq/VIRTIO_GPU_CMD_UPDATE_CURSOR/driver-must": "Before UPDATE_CURSOR the cursor image is transferred and its commands completed.",
}
