"""The PostgreSQL wire-protocol proxy: sans-IO codec, session state, asyncio driver."""
