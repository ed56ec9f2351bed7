"""Serve the research agent (OpenAI chat API) and its tools (MCP)."""
