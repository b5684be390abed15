"""What the trainer and every launcher share: the rank/world environment, the output_dir lock and the
stop record. Both `train/` and `launch/` import from here; `train/` imports nothing from `launch/`."""
