"""Jobs (progress + cooperative cancel), tiling and stitching, tissue masks, devices, seeds."""
