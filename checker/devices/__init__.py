"""Device targets and their transports: qtest, a virtio-pci driver, QMP, vhost-user, the adapter protocol."""
