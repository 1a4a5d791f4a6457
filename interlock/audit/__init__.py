"""The tamper-evident audit log of every decision."""
