"""The admin HTTP API: health, and later approvals, posture and metrics."""
