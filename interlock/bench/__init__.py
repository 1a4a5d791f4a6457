"""interlock's benchmark suites: each measures a component against a baseline in the same run."""
