"""Running asv: the project-configured asv command and asv's patches, the main job, the regression gate."""
