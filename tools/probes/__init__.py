"""Developer probes that measure outside asv: the arithmetic floor of a step, where GPU time goes."""
