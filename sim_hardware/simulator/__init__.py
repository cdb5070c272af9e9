"""The device simulator: Modbus meters, batteries, households, faults, the shared clock."""
