"""The run lifecycle: config, training driver, callbacks, checkpoints, RNG state."""
