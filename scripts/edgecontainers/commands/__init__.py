"""One module per ``edgectl`` subcommand."""
