"""Developer tools, off the pipeline's import path (the package never imports them): speed
benchmarks, publishing the SR checkpoint, and the README's generated sections. Run them with
``volinr-dev``."""
