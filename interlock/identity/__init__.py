"""Who an agent is: the agent registry, JWT verification, delegation chains."""
