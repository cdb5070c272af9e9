"""The interval cycle: open, clear at gate closure, settle after the interval."""
