"""The pipeline's stages: thin adapters grouped by job (data, sr, siren, methods, evaluate,
report), each one `volinr` subcommand and one Snakemake rule. ``volinr.cli.SUBCOMMANDS`` says
which function runs which subcommand. A stage reads its inputs, calls the module that does the
work and writes its outputs atomically; it holds no domain logic of its own."""
