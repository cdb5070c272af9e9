"""Hardware simulator: Modbus meters and DER devices, household models, one clock, faults."""
