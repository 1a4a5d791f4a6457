"""The stdio MCP gateway (`interlock mcp run -- SERVER`): a PEP between a host and a tool server."""
