"""The `kangaroo-edge` command: one module per subcommand."""
