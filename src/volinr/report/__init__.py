"""What a run shows: the paper's tables with its numbers beside ours, the rate-distortion
tables, the figures and the summary. Everything here reads the pipeline's outputs."""
