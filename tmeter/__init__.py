"""The host side of tmeter: the `tmeter` command line and the host-side firmware tools."""
