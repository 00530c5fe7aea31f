"""Primitives on images that every job may use and none owns: crop boxes and cutting, the stitching grid,
training augmentations (DSA, crop/flip, strip shuffling, CutMix, Mixup)."""
