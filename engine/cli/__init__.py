"""The `dsctl` command: argument parsing and dispatch, one module per verb group, presentation, the live
view and `dsctl up`."""
