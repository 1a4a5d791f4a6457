"""`interlock host`: per-agent-user nftables lockdown and tool ACLs, following posture."""
