"""The scan: one forward pass over calibration text -> distances between residual streams."""
