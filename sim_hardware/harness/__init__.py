"""The community harness: whole runs of simulator, firmware, broker and gateway."""
