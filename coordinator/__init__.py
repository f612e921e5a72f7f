"""The coordinator: the hub that stores studies, schedules trials and leases them to nodes."""
