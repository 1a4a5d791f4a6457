"""Threat intelligence: domain and IP indicators from feed files, matched against actions."""
