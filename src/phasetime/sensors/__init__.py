"""Sensors: resources sampled at the phase boundaries of a call (memory, FLOPs and bytes, energy),
the device's roof, and how GPUs are named. Torch is imported inside functions only: the
results floor reads the sensors' column declarations without it."""
