"""Real removal of blocks / sublayers, and checkpoints that load back exactly."""
