"""Training: the one trainer, checkpoints, schedules and the run folder."""
