"""The built-in ``polydiff`` subcommands; each module registers its own (``polydiff.registry.register_command``)."""
