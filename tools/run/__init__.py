"""Running asv: the project-configured asv command, the main job, the regression gate."""
