"""The bundled default policy (Rego modules, data.json and their Rego tests)."""
