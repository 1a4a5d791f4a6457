"""Human approval of held actions: the hold itself now; channels (CLI, API, web, webhook,
CIBA) with the approvals issue."""
