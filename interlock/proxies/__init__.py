"""Policy enforcement points: one package per protocol, none importing another."""
