"""The entrypoint of flyray_shipping_operator's Ray job: it runs in the shipped working_dir."""

import os

import lib_for_ray

print("SHIPPED_OK", lib_for_ray.VALUE)
print("IGNORED_FILE_PRESENT", os.path.exists("ignored.log"))
